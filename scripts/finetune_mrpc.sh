#!/usr/bin/env bash
# The main job: fine-tunes all-MiniLM-L6-v2 on GLUE MRPC (bundled in data/) with
# accel-finetune and prints the dev metrics. Extra arguments go to accel-finetune
# (e.g. --epochs 1, --mixed-precision bf16, --max-train-samples 500).
set -euo pipefail
cd "$(dirname "$0")/.."
model_dir=$(bash scripts/fetch_minilm.sh)
# No -DACCEL_CUDA: the default (the CUDA backend wherever nvcc exists) is what scripts/test.sh
# builds too, so the two commands share build/ instead of reconfiguring it back and forth.
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target accel-finetune
./build/bin/accel-finetune \
  --model "$model_dir" --task mrpc \
  --train data/mrpc/train.tsv --eval data/mrpc/dev.tsv \
  --epochs 3 --lr 5e-5 --batch-size 32 --max-seq-len 128 --warmup-ratio 0.1 --weight-decay 0.01 \
  --seed 42 --output-dir runs/mrpc-minilm "$@"
echo "metrics: runs/mrpc-minilm/metrics.json"
