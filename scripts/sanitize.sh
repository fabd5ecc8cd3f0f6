#!/usr/bin/env bash
# The sanitizer stage of CI (.ci/run runs it after scripts/test.sh). Two CPU-only clang trees:
#   build-asan  AddressSanitizer with its LeakSanitizer, and UndefinedBehaviorSanitizer: the whole
#               CTest suite, mpirun tests included. Any report, and any leak at exit, fails its test.
#   build-tsan  ThreadSanitizer: only the data loader tests, the asynchronous collective tests
#               (ddp and zero under mpirun), and GEMMs and BERT forwards from several threads
#               at once (shared primitives, the packed-weight cache): the code where accel runs
#               threads and overlaps work, or threads share state.
# Both keep line tables only (enough for symbolized stacks, cheap to build); the libraries
# compile at -O1 (CMakeLists.txt: accel_instrumented_library), the tests, tools and examples at
# -O0, which instruments in a third of the time and costs the suite little: its time is in kernels.
# scripts/sanitizers/*.supp silence reports inside third-party libraries only, never accel's.
# Usage: scripts/sanitize.sh [asan|tsan]   (both when no argument)
set -euo pipefail
cd "$(dirname "$0")/.."
stages=("$@")
[ $# -gt 0 ] || stages=(asan tsan)
jobs=$(nproc)
supp=$PWD/scripts/sanitizers
common=(-G Ninja -DCMAKE_CXX_COMPILER=clang++ -DACCEL_CUDA=OFF -DACCEL_BUILD_BENCH=OFF
        -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O0 -gline-tables-only -DNDEBUG")
if command -v ccache >/dev/null; then common+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi

# timed LABEL COMMAND...: runs COMMAND and prints how long it took.
timed() {
  local label=$1 start=$SECONDS
  shift
  "$@"
  echo "sanitize.sh: $label took $((SECONDS - start)) s"
}

# The sanitizers' runtime options reach mpirun's ranks through the environment they inherit.
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export ASAN_OPTIONS="detect_leaks=1:strict_init_order=1:check_initialization_order=1"
export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$supp/tsan.supp"

for stage in "${stages[@]}"; do
  case $stage in
    asan)
      # ACCEL_FUZZ adds libFuzzer's coverage hooks, so scripts/fuzz.sh can then build its targets
      # in this same tree (BUILD_DIR=build-asan) instead of compiling everything a third time.
      cmake -S . -B build-asan "${common[@]}" -DACCEL_SANITIZE=ON -DACCEL_FUZZ=ON >/dev/null
      timed "asan build" cmake --build build-asan -j"$jobs"
      # Open MPI's plugins stay loaded to the leak check, so lsan.supp can name them (see the file).
      cc -shared -fPIC -O2 scripts/sanitizers/keep_plugins_loaded.c -o build-asan/libkeep_plugins_loaded.so
      LD_PRELOAD="$PWD/build-asan/libkeep_plugins_loaded.so" \
        timed "asan tests" ctest --test-dir build-asan --output-on-failure -j"$jobs"
      ;;
    tsan)
      # The OpenMP runtimes (libomp, oneDNN's libgomp) are not instrumented, so TSan would take
      # their barriers for races; one OpenMP thread leaves the threads accel starts itself.
      export OMP_NUM_THREADS=1
      cmake -S . -B build-tsan "${common[@]}" -DACCEL_TSAN=ON >/dev/null
      timed "tsan build" cmake --build build-tsan -j"$jobs" \
        --target test_data test_ddp test_zero test_tensor test_weight_packing test_bert
      timed "tsan tests" ctest --test-dir build-tsan --output-on-failure -j"$jobs" \
        -R '^((Collate|DataLoader|Glue|MapExamples|Readers)\.|(ddp|zero)_np|(Ops|WeightPacking|BertPretrained)\.Concurrent)'
      ;;
    *) echo "sanitize.sh: unknown stage '$stage' (expected asan or tsan)" >&2; exit 2 ;;
  esac
done
