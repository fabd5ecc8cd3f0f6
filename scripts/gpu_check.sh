#!/usr/bin/env bash
# scripts/gpu_check.sh: the one script a session with a GPU runs to check the CUDA backend.
# Configures and builds build-gpu with CUDA (Release, sm_90 unless CUDAARCHS says otherwise),
# runs the `cuda` CTest label (test_cuda_ops, the CPU-vs-CUDA harness, test_nccl, and
# test_accelerator_cuda, the Accelerator training on the GPU against the CPU), then
# compute-sanitizer memcheck over a few fast cases of test_cuda_ops, and prints a compact
# summary. Logs stay in build-gpu/gpu_check/. Exits non-zero if anything failed.
#   scripts/gpu_check.sh            # everything (a few minutes, mostly the build)
#   JOBS=8 scripts/gpu_check.sh     # parallel build jobs (default: all cores)
#   PREBUILT=build scripts/gpu_check.sh
#       no configure or build: runs build/bin/test_cuda_ops, test_nccl and test_accelerator_cuda as built elsewhere
#       (same image), with build/lib on LD_LIBRARY_PATH. Saves the build's minutes when the
#       GPU time is short: carry build/lib and those three binaries from build/bin.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=build-gpu
LOGS=$BUILD/gpu_check
JOBS=${JOBS:-$(nproc)}
mkdir -p "$LOGS"
status=0
summary=()

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/GPU: /' ||
  echo "GPU: nvidia-smi unavailable"

if [ -n "${PREBUILT:-}" ]; then
  BUILD=$PREBUILT
  export LD_LIBRARY_PATH="$PWD/$BUILD/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  summary+=("build: prebuilt in $BUILD")
else
  launcher=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
  if ! cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DACCEL_CUDA=ON -DACCEL_BUILD_BENCH=OFF \
       "${launcher[@]}" >"$LOGS/configure.log" 2>&1; then
    echo "CONFIGURE FAILED: tail of $LOGS/configure.log"; tail -30 "$LOGS/configure.log"; exit 1
  fi
  start=$(date +%s)
  if ! cmake --build "$BUILD" -j"$JOBS" --target test_cuda_ops test_nccl test_accelerator_cuda >"$LOGS/build.log" 2>&1; then
    echo "BUILD FAILED: errors from $LOGS/build.log"; grep -E "error|FAILED" "$LOGS/build.log" | head -40; exit 1
  fi
  summary+=("build: ok ($(( $(date +%s) - start )) s)")
fi

if [ -n "${PREBUILT:-}" ]; then
  # ctest's files name the other machine's paths: run the two binaries instead.
  for binary in test_cuda_ops test_nccl test_accelerator_cuda; do
    if ./"$BUILD"/bin/$binary --gtest_brief=1 >"$LOGS/$binary.log" 2>&1; then
      summary+=("$binary: $(grep -E '^\[  PASSED  \]' "$LOGS/$binary.log")")
    else
      status=1
      summary+=("$binary: FAILED: $(grep -cE '^\[  FAILED  \]' "$LOGS/$binary.log") failed lines, log $LOGS/$binary.log")
    fi
    grep -q "Skipped" "$LOGS/$binary.log" && summary+=("$binary skipped: $(grep -m1 -o 'no CUDA device[^;]*' "$LOGS/$binary.log")")
  done
  cat "$LOGS"/test_cuda_ops.log "$LOGS"/test_nccl.log "$LOGS"/test_accelerator_cuda.log >"$LOGS/ctest.log"
else
  # Every `cuda`-labelled test case (test_cuda_ops, test_nccl, test_accelerator_cuda), each its own process.
  if ctest --test-dir "$BUILD" -L cuda --output-on-failure --timeout 300 >"$LOGS/ctest.log" 2>&1; then
    summary+=("ctest -L cuda: $(grep -Eo '[0-9]+% tests passed.*' "$LOGS/ctest.log" | head -1)")
  else
    status=1
    summary+=("ctest -L cuda: $(grep -Eo '[0-9]+% tests passed.*' "$LOGS/ctest.log" | head -1) (failures below)")
  fi
  skipped=$(grep -c "Skipped" "$LOGS/ctest.log" || true)
  [ "$skipped" != "0" ] && summary+=("skipped: $skipped (reason: $(grep -m1 -o 'no CUDA device[^;]*' "$LOGS/ctest.log"))")
fi

# Memcheck on a few quick cases: out-of-bounds or misaligned accesses that happen to give
# right answers show up only here.
if command -v compute-sanitizer >/dev/null || [ -x /usr/local/cuda/bin/compute-sanitizer ]; then
  sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  timeout "${MEMCHECK_TIMEOUT:-150}" "$sanitizer" --tool memcheck --error-exitcode 3 \
    ./"$BUILD"/bin/test_cuda_ops --gtest_brief=1 \
    --gtest_filter='CudaOps.Unary*:CudaOps.Binary*:CudaOps.Casts*:CudaOps.Softmax*:CudaOps.LayerNorm*:CudaOps.AddLayerNorm*:CudaOps.Attention*:CudaOps.CrossEntropy*:CudaOps.Dropout*:CudaOps.FusedAdamWMultiTensor*:CudaOps.MatmulKernel*:CudaRuntime.*' \
    >"$LOGS/memcheck.log" 2>&1
  memcheck_status=$?
  case $memcheck_status in
    0) summary+=("memcheck: clean") ;;
    124) summary+=("memcheck: timed out after ${MEMCHECK_TIMEOUT:-150} s (no verdict; raise MEMCHECK_TIMEOUT)") ;;
    *) status=1; summary+=("memcheck: ERRORS, exit $memcheck_status (first below; all in $LOGS/memcheck.log)") ;;
  esac
else
  summary+=("memcheck: compute-sanitizer not found, skipped")
fi

# A run where the tests skipped checked nothing: say so in the exit status too.
if grep -q "no CUDA device" "$LOGS/ctest.log"; then
  summary+=("NOTHING WAS CHECKED: the CUDA tests skipped (no usable GPU); exit 2")
  [ $status -eq 0 ] && status=2
fi

echo "==== gpu_check summary ===="
printf '%s\n' "${summary[@]}"
if grep -q "Failure" "$LOGS/ctest.log"; then
  echo "---- failed cases ----"
  sed -n '/tests failed out of/,$p' "$LOGS/ctest.log" | grep -E "^\s+[0-9]+ - " | head -40
  echo "---- first failure messages (all in $LOGS/ctest.log) ----"
  grep -E -A8 "Failure$" "$LOGS/ctest.log" | head -120
fi
if [ -f "$LOGS/memcheck.log" ] && grep -q "ERROR SUMMARY: [1-9]" "$LOGS/memcheck.log"; then
  echo "---- memcheck (first 40 lines of errors) ----"
  grep -E -A8 "Invalid|Error|=========" "$LOGS/memcheck.log" | head -40
fi
[ -n "${OUT:-}" ] && cp -r "$LOGS" "$OUT/"  # on the device machine, the logs come back
exit $status
