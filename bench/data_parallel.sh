#!/usr/bin/env bash
# Data-parallel scaling on this machine: 1 rank x 1 thread, then 2 ranks x 1 thread, the same
# per-rank batch (weak scaling, as data parallelism is used), MiniLM-L6 shapes. Prints both
# runs, the scaling efficiency throughput(2) / (2 x throughput(1)), and the share of DDP's
# all-reduce time hidden behind backward. Then, as the ceiling for this machine, two 1-rank
# runs at the same time with no communication at all: what two ranks get from the cores and
# memory alone. Run it on an otherwise idle machine. --batch sets the per-rank batch (default 8;
# 32 is the MiniLM shape of bench/bert_step.sh).
#   bench/data_parallel.sh [--quick] [--batch B] [--zero-stage S]
set -euo pipefail
cd "$(dirname "$0")/.."
steps=4; batch=8; extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) steps=1; batch=2 ;;
    --batch) batch="$2"; shift ;;
    --zero-stage) extra+=(--zero-stage "$2"); shift ;;
    *) echo "usage: bench/data_parallel.sh [--quick] [--batch B] [--zero-stage S]" >&2; exit 2 ;;
  esac
  shift
done
cmake --build build --target bench_data_parallel >/dev/null
# run N [MPIRUN_ARGS...]: N ranks of one thread each (mpirun binds rank r to core r).
run() {
  local ranks=$1
  shift
  OMP_NUM_THREADS=1 mpirun --allow-run-as-root --oversubscribe "$@" -np "$ranks" build/bin/bench_data_parallel \
    --batch "$batch" --steps "$steps" "${extra[@]}"
}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), load $(cut -d' ' -f1-3 /proc/loadavg)"
one=$(run 1); echo "$one" | head -1
two=$(run 2); echo "$two" | head -1
pair_log=$(mktemp)
# Unbound: two separate mpiruns would each bind their one rank to core 0.
run 1 --bind-to none >"$pair_log.a" & run 1 --bind-to none >"$pair_log.b"; wait
echo "two independent 1-rank runs at once: $(head -1 "$pair_log.a"); $(head -1 "$pair_log.b")"
python3 - "$(echo "$one" | tail -1)" "$(echo "$two" | tail -1)" "$(tail -1 "$pair_log.a")" "$(tail -1 "$pair_log.b")" <<'PY'
import json, sys
one, two, pair_a, pair_b = (json.loads(a) for a in sys.argv[1:5])
efficiency = two["samples_per_s"] / (2 * one["samples_per_s"])
ceiling = (pair_a["samples_per_s"] + pair_b["samples_per_s"]) / (2 * one["samples_per_s"])
print(f"scaling efficiency 2 ranks vs 1: {efficiency:.1%} (target >= 90%); "
      f"all-reduce {two['allreduce_ms']:.0f} ms/step, {two['hidden_share']:.0%} hidden behind backward")
print(f"ceiling on this machine (two uncoupled 1-rank runs at once): {ceiling:.1%}; "
      f"the gap to it, what communication and synchronization cost: {100 * (ceiling - efficiency):.1f} points")
print(json.dumps({"bench": "data_parallel", "one_rank": one, "two_ranks": two, "efficiency": round(efficiency, 4),
                  "uncoupled_pair": [pair_a, pair_b], "ceiling": round(ceiling, 4)}))
PY
rm -f "$pair_log" "$pair_log.a" "$pair_log.b"
