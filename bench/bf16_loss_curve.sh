#!/usr/bin/env bash
# Does bf16 training track fp32? Fine-tunes the same model on GLUE MRPC twice with
# accel-finetune, same seed (same initialization, shuffling and dropout draws), once in fp32
# and once under bf16 autocast, then compares the two training-loss curves that the runs print
# every 10 steps (their progress lines, 4 decimals) and their dev metrics.
#
# Usage: bench/bf16_loss_curve.sh [--epochs N] [--threads N]
# Environment: BUILD_DIR (default build), MODEL_DIR (default: scripts/fetch_minilm.sh).
# Prints the two curves side by side, then one JSON line:
#   {"steps_logged","mean_abs_diff","max_abs_diff_smoothed","final_loss_f32","final_loss_bf16",
#    "f32_accuracy","bf16_accuracy","f32_f1","bf16_f1","f32_s","bf16_s"}
# where the smoothed difference compares 5-point moving averages (single-batch losses are noisy).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
epochs=3
threads=$(nproc)
while [[ $# -gt 0 ]]; do
  case $1 in
    --epochs) epochs=$2; shift ;;
    --threads) threads=$2; shift ;;
    *) echo "usage: $0 [--epochs N] [--threads N]" >&2; exit 2 ;;
  esac
  shift
done
model_dir=${MODEL_DIR:-$(bash "$root/scripts/fetch_minilm.sh")}
cmake --build "$build" -j"$(nproc)" --target accel-finetune >/dev/null
out=$build/bf16_loss_curve
rm -rf "$out"
mkdir -p "$out"
for precision in no bf16; do
  start=$SECONDS
  "$build/bin/accel-finetune" --model "$model_dir" --task mrpc \
    --train "$root/data/mrpc/train.tsv" --eval "$root/data/mrpc/dev.tsv" \
    --epochs "$epochs" --lr 5e-5 --batch-size 32 --max-seq-len 128 --warmup-ratio 0.1 --weight-decay 0.01 \
    --seed 42 --threads "$threads" --mixed-precision "$precision" --output-dir "$out/$precision" \
    >"$out/$precision.log" 2>&1
  echo "$((SECONDS - start))" >"$out/$precision.seconds"
  tail -n 1 "$out/$precision.log"
done

python3 - "$out" <<'PY'
import json, os, re, sys

out = sys.argv[1]

def run(precision):
    losses = {}  # step -> training loss, from progress lines "epoch E step S/N loss L ..."
    with open(os.path.join(out, precision + ".log")) as f:
        for m in re.finditer(r"step (\d+)/\d+ loss ([\d.]+)", f.read()):
            losses[int(m.group(1))] = float(m.group(2))
    with open(os.path.join(out, precision, "metrics.json")) as f:
        best = json.load(f)  # the best epoch's dev metrics, at the top level
    with open(os.path.join(out, precision + ".seconds")) as f:
        seconds = int(f.read())
    return losses, best, seconds

f32, f32_best, f32_s = run("no")
bf16, bf16_best, bf16_s = run("bf16")
steps = sorted(set(f32) & set(bf16))
assert steps, "the two runs logged no common steps"

def smooth(values, width=5):
    return [sum(values[max(0, i - width + 1):i + 1]) / len(values[max(0, i - width + 1):i + 1]) for i in range(len(values))]

a, b = [f32[s] for s in steps], [bf16[s] for s in steps]
sa, sb = smooth(a), smooth(b)
print(f"{'step':>6} {'fp32 loss':>10} {'bf16 loss':>10} {'diff':>8}")
for s, x, y in zip(steps, a, b):
    print(f"{s:>6} {x:>10.4f} {y:>10.4f} {y - x:>+8.4f}")
print(json.dumps({
    "steps_logged": len(steps),
    "mean_abs_diff": round(sum(abs(x - y) for x, y in zip(a, b)) / len(steps), 4),
    "max_abs_diff_smoothed": round(max(abs(x - y) for x, y in zip(sa, sb)), 4),
    "final_loss_f32": round(sa[-1], 4), "final_loss_bf16": round(sb[-1], 4),
    "f32_accuracy": round(f32_best["accuracy"], 4), "bf16_accuracy": round(bf16_best["accuracy"], 4),
    "f32_f1": round(f32_best["f1"], 4), "bf16_f1": round(bf16_best["f1"], 4),
    "f32_s": f32_s, "bf16_s": bf16_s}))
PY
