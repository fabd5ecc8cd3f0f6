#!/usr/bin/env bash
# Runs an example on 64 MRPC pairs for one epoch with the all-MiniLM-L6-v2 weights that
# scripts/fetch_minilm.sh caches; exits 77 (CTest's skip) when they are not there.
set -euo pipefail
program=$1 mrpc_dir=$2
model_dir=${ACCEL_MINILM_DIR:-${ACCEL_CACHE:-$HOME/.cache/accel}/models/all-MiniLM-L6-v2}
if [ ! -f "$model_dir/model.safetensors" ]; then
  echo "skipped: no all-MiniLM-L6-v2 at $model_dir (run scripts/fetch_minilm.sh)"
  exit 77
fi
"$program" "$model_dir" "$mrpc_dir/train.tsv" "$mrpc_dir/dev.tsv" 1 64
