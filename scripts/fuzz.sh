#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ and runs each for SECONDS_PER_TARGET (default 60),
# single process, on a scratch copy of its seed corpus (the committed corpus under
# fuzz/corpus/ is never written). FUZZ_JOBS targets run at once (default 1; CI uses one per
# core). Fails on any finding (crash, sanitizer report, uncaught exception, timeout,
# out-of-memory), printing the input's path and the report.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]    e.g. scripts/fuzz.sh 600 safetensors
#   FUZZ_JOBS=2 scripts/fuzz.sh 60                      CI: all six, two at a time
#
# BUILD_DIR (default build-fuzz) is configured with clang and -DACCEL_FUZZ=ON when it is not
# already; an existing tree (build-asan, say) only gets ACCEL_FUZZ switched on.
# Findings and logs are kept in $BUILD_DIR/fuzz-runs/<target>/.
set -euo pipefail

seconds="${1:-60}"
[ "$#" -gt 0 ] && shift
targets=("$@")
[ "${#targets[@]}" -eq 0 ] && targets=(safetensors tokenizer bert_config launch_config json tsv)

root="$(cd "$(dirname "$0")/.." && pwd)"
build_dir="${BUILD_DIR:-build-fuzz}"
case "$build_dir" in /*) ;; *) build_dir="$root/$build_dir" ;; esac

# Input size limits per target: a few times the largest seed.
declare -A max_len=([safetensors]=16384 [tokenizer]=4096 [bert_config]=4096 [launch_config]=4096
                    [json]=16384 [tsv]=8192)

if ! grep -qs '^ACCEL_FUZZ:BOOL=ON' "$build_dir/CMakeCache.txt"; then
  if [ -f "$build_dir/CMakeCache.txt" ]; then
    cmake -S "$root" -B "$build_dir" -DACCEL_FUZZ=ON
  else
    launcher=()
    command -v ccache > /dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
    cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O1 -g" \
      -DCMAKE_CXX_COMPILER=clang++ -DACCEL_FUZZ=ON -DACCEL_CUDA=OFF -DACCEL_BUILD_BENCH=OFF "${launcher[@]}"
  fi
fi
cmake --build "$build_dir" --target "${targets[@]/#/fuzz_}"

# Sanitizer reports end the run with a stack; UBSan stops at its first report.
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_stack_use_after_return=1:symbolize=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:symbolize=1}"

# run_target TARGET: fuzzes TARGET, then writes its verdict (first line OK or FAILED, then the
# report) to its run directory's summary and returns non-zero on a finding.
run_target() {
  local target=$1
  local binary="$build_dir/bin/fuzz_$target" seeds="$root/fuzz/corpus/$target"
  local run_dir="$build_dir/fuzz-runs/$target"
  rm -rf "$run_dir"
  mkdir -p "$run_dir/corpus" "$run_dir/findings"
  cp "$seeds"/* "$run_dir/corpus/"
  local options=(-max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10
                 -max_len="${max_len[$target]}" -print_final_stats=1 -artifact_prefix="$run_dir/findings/")
  [ -f "$root/fuzz/dict/$target.dict" ] && options+=(-dict="$root/fuzz/dict/$target.dict")

  local status=0
  "$binary" "${options[@]}" "$run_dir/corpus" > "$run_dir/log" 2>&1 || status=$?

  local execs ran coverage inputs finding
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$run_dir/log" | tail -1)"
  ran="$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$run_dir/log" | tail -1)"
  coverage="$(grep -o 'cov: [0-9]* ft: [0-9]*' "$run_dir/log" | tail -1 || true)"
  inputs="$(find "$run_dir/corpus" -type f | wc -l)"
  if [ "$status" -eq 0 ]; then
    echo "fuzz_$target: OK, ${execs:-?} execs in ${ran:-?} s, ${coverage:-cov: ?}, corpus $inputs inputs" \
      > "$run_dir/summary"
    return 0
  fi
  {
    echo "fuzz_$target: FAILED (exit $status) after ${execs:-?} execs, ${coverage:-cov: ?}"
    finding="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$run_dir/log" | tail -1)"
    echo "  input: ${finding:-none written}"
    echo "  reproduce: $binary ${finding:-<input>}"
    echo "  report ($run_dir/log):"
    grep -n -m1 -E '^==[0-9]+==|runtime error:|fuzz invariant failed|terminate called|ERROR: libFuzzer' \
      "$run_dir/log" | cut -d: -f1 | while read -r first; do
      tail -n "+$first" "$run_dir/log" | head -n 60 | sed 's/^/    /'
    done || true
  } > "$run_dir/summary"
  return 1
}

for target in "${targets[@]}"; do
  [ -d "$root/fuzz/corpus/$target" ] || { echo "fuzz.sh: no seed corpus $root/fuzz/corpus/$target" >&2; exit 2; }
done
jobs="${FUZZ_JOBS:-1}"
running=0
for target in "${targets[@]}"; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  run_target "$target" &
  running=$((running + 1))
done
wait || true

# Verdicts in the order the targets were named, whichever finished first.
failed=()
for target in "${targets[@]}"; do
  summary="$build_dir/fuzz-runs/$target/summary"
  if [ -f "$summary" ]; then cat "$summary"; else echo "fuzz_$target: FAILED (no verdict written)"; fi
  [ -f "$summary" ] && head -1 "$summary" | grep -q ': OK,' || failed+=("$target")
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz.sh: findings in ${failed[*]}" >&2
  exit 1
fi
