#!/usr/bin/env bash
# The GEMM benchmark, end to end: builds bench_gemm if needed, runs it (accel and raw oneDNN)
# and gemm_torch.py (PyTorch) alternately with the same thread count, and prints one Markdown
# table with accel/oneDNN and accel/torch throughput ratios per shape, merged from the
# programs' JSON lines. Each number is the best of the rounds' medians, which filters out
# rounds disturbed by other work on the machine. It is a benchmark, not a test: it checks
# nothing, and fails only when a program fails.
#
# Usage: bench/gemm.sh [--quick] [--threads N] [--rounds R]
#   --threads  default: nproc;  --rounds  runs of each program, default 2 (1 with --quick)
# Environment: BUILD_DIR (default build-bench). Raw output is kept in $BUILD_DIR/bench_gemm_logs.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build-bench}
threads=$(nproc)
quick=""
rounds=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) quick=--quick ;;
    --threads) threads=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    *) echo "usage: $0 [--quick] [--threads N] [--rounds R]" >&2; exit 2 ;;
  esac
  shift
done
rounds=${rounds:-$([[ -n $quick ]] && echo 1 || echo 2)}

if [[ ! -f $build/build.ninja ]]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DACCEL_CUDA=OFF -DACCEL_BUILD_TESTS=OFF
fi
cmake --build "$build" -j"$(nproc)" --target bench_gemm

logs=$build/bench_gemm_logs
rm -rf "$logs"
mkdir -p "$logs"
for ((round = 1; round <= rounds; ++round)); do
  echo "== round $round/$rounds: accel + oneDNN"
  "$build/bin/bench_gemm" --threads "$threads" $quick | tee "$logs/accel_$round.log"
  echo "== round $round/$rounds: PyTorch"
  # The environment's OpenBLAS overrides are for other programs; PyTorch runs with its defaults.
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 "$root/bench/gemm_torch.py" --threads "$threads" $quick \
    | tee "$logs/torch_$round.log"
done

echo
echo "== GEMM at BERT shapes, $threads threads (GFLOP/s; ratios are accel's throughput over the reference's)"
python3 - "$logs" <<'EOF'
import glob
import json
import sys

rows = {}  # (case, dtype) -> merged fields; each *_ms is the best over rounds
for path in sorted(glob.glob(f"{sys.argv[1]}/*.log")):
    for line in open(path):
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        row = rows.setdefault((record["case"], record["dtype"]), {})
        for key, value in record.items():
            if key.endswith("_ms"):
                if value is not None:
                    row[key] = min(value, row.get(key, value))
            else:
                row.setdefault(key, value)

def gflops(row, key):
    return row["flop"] / (row[key] * 1e6) if key in row else None

def fmt(value, spec):
    return "-" if value is None else format(value, spec)

print("| case | shape | dtype | accel ms | accel | oneDNN | torch | accel/oneDNN | accel/torch |")
print("|---|---|---|--:|--:|--:|--:|--:|--:|")
for (case, dtype), row in rows.items():
    accel, onednn, torch = (gflops(row, k) for k in ("accel_ms", "onednn_ms", "torch_ms"))
    if accel is None or torch is None:
        print(f"warning: {case} {dtype} is missing from {'accel' if accel is None else 'torch'}", file=sys.stderr)
    print(f"| {case} | {row.get('shape', '?')} | {dtype} | {fmt(row.get('accel_ms'), '.2f')} | {fmt(accel, '.1f')} "
          f"| {fmt(onednn, '.1f')} | {fmt(torch, '.1f')} "
          f"| {fmt(accel / onednn if accel and onednn else None, '.2f')} "
          f"| {fmt(accel / torch if accel and torch else None, '.2f')} |")
EOF
