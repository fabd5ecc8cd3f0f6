#!/usr/bin/env bash
# Data-parallel scaling on this machine: 1 rank x 1 thread, then 2 ranks x 1 thread, the same
# per-rank batch (weak scaling, as data parallelism is used), MiniLM-L6 shapes (batch 32 x 128
# per rank by default, bench/bert_step.sh's MiniLM shape). Then, as the ceiling for this
# machine, two 1-rank runs at the same time with no communication at all: what two ranks get
# from the cores and memory alone. These three runs form one round; --rounds R (default 3)
# repeats it, so that each round's efficiency compares runs minutes apart, not a run against
# one taken on a different phase of this noisy VM, and the result is the median over rounds.
# Prints every run, each round's scaling efficiency throughput(2) / (2 x throughput(1)), the
# share of DDP's all-reduce time hidden behind backward, and a JSON line. Run it on an
# otherwise idle machine.
#   bench/data_parallel.sh [--quick] [--batch B] [--rounds R] [--zero-stage S]
set -euo pipefail
cd "$(dirname "$0")/.."
steps=4; batch=32; rounds=3; extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) steps=1; batch=2; rounds=1 ;;
    --batch) batch="$2"; shift ;;
    --rounds) rounds="$2"; shift ;;
    --zero-stage) extra+=(--zero-stage "$2"); shift ;;
    *) echo "usage: bench/data_parallel.sh [--quick] [--batch B] [--rounds R] [--zero-stage S]" >&2; exit 2 ;;
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
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
for round in $(seq 1 "$rounds"); do
  run 1 >"$logs/one.$round"; echo "round $round: $(head -1 "$logs/one.$round")"
  run 2 >"$logs/two.$round"; echo "round $round: $(head -1 "$logs/two.$round")"
  # Unbound: two separate mpiruns would each bind their one rank to core 0.
  run 1 --bind-to none >"$logs/pair_a.$round" & run 1 --bind-to none >"$logs/pair_b.$round"; wait
  echo "round $round: two independent 1-rank runs at once: $(head -1 "$logs/pair_a.$round"); $(head -1 "$logs/pair_b.$round")"
done
python3 - "$logs" "$rounds" <<'PY'
import json, statistics, sys
logs, rounds = sys.argv[1], int(sys.argv[2])
def result(name, r):
    with open(f"{logs}/{name}.{r}") as f:
        return json.loads(f.read().strip().splitlines()[-1])
per_round = []
for r in range(1, rounds + 1):
    one, two, a, b = (result(n, r) for n in ("one", "two", "pair_a", "pair_b"))
    efficiency = two["samples_per_s"] / (2 * one["samples_per_s"])
    ceiling = (a["samples_per_s"] + b["samples_per_s"]) / (2 * one["samples_per_s"])
    per_round.append({"one_rank": one, "two_ranks": two, "uncoupled_pair": [a, b],
                      "efficiency": round(efficiency, 4), "ceiling": round(ceiling, 4)})
    print(f"round {r}: scaling efficiency {efficiency:.1%}, ceiling (two uncoupled 1-rank runs) {ceiling:.1%}; "
          f"all-reduce {two['allreduce_ms']:.0f} ms/step, {two['hidden_share']:.0%} hidden behind backward")
efficiency = statistics.median(p["efficiency"] for p in per_round)
ceiling = statistics.median(p["ceiling"] for p in per_round)
print(f"scaling efficiency 2 ranks vs 1, median of {rounds} round(s): {efficiency:.1%} (target >= 90%); "
      f"ceiling on this machine: {ceiling:.1%}; the gap, what communication and synchronization cost: "
      f"{100 * (ceiling - efficiency):.1f} points")
print(json.dumps({"bench": "data_parallel", "batch": per_round[0]["one_rank"]["batch"], "rounds": per_round,
                  "efficiency": round(efficiency, 4), "ceiling": round(ceiling, 4)}))
PY
