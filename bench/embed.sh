#!/usr/bin/env bash
# The sentence-embedding benchmark: accel-embed against sentence-transformers (PyTorch) with
# all-MiniLM-L6-v2 on the same real sentences (SST-2 and MRPC dev, topped up from MRPC train),
# the same thread count and batch size, alternating the two programs (accel, torch, accel,
# torch, ...). Prints each run's sentences/s, the best of each, their ratio, and the load
# average. It also checks that the two agree: every sentence's embeddings must have cosine
# >= 0.99999, else it fails. Throughput is for the encode work only (tokenization, forward
# passes, pooling, normalization), not model loading or writing the output.
#
# Usage: bench/embed.sh [--threads N] [--batch-size B] [--sentences S] [--rounds R]
#   defaults: 2 threads, batch 32, 2000 sentences, 2 rounds
# Environment: BUILD_DIR (default build-bench), MODEL_DIR (default: scripts/fetch_minilm.sh).
# Raw output is kept in $BUILD_DIR/bench_embed_logs.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build-bench}
threads=2
batch=32
count=2000
rounds=2
while [[ $# -gt 0 ]]; do
  case $1 in
    --threads) threads=$2; shift ;;
    --batch-size) batch=$2; shift ;;
    --sentences) count=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    *) echo "usage: $0 [--threads N] [--batch-size B] [--sentences S] [--rounds R]" >&2; exit 2 ;;
  esac
  shift
done

model=${MODEL_DIR:-$(bash "$root/scripts/fetch_minilm.sh")}
if [[ ! -f $build/build.ninja ]]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DACCEL_CUDA=OFF -DACCEL_BUILD_TESTS=OFF
fi
cmake --build "$build" -j"$(nproc)" --target accel-embed
python3 -c "import sentence_transformers" 2>/dev/null || python3 -m pip install -q sentence-transformers

logs=$build/bench_embed_logs
rm -rf "$logs"
mkdir -p "$logs"
sentences=$logs/sentences.jsonl
python3 - "$root/data" "$count" > "$sentences" <<'EOF'
import csv
import json
import sys

data, count = sys.argv[1], int(sys.argv[2])

def column(path, names):
    with open(path, encoding="utf-8-sig", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            for name in names:
                yield row[name].strip()

sources = [column(f"{data}/sst2/dev.tsv", ["sentence"]),
           column(f"{data}/mrpc/dev.tsv", ["#1 String", "#2 String"]),
           column(f"{data}/mrpc/train.tsv", ["#1 String", "#2 String"])]
written = 0
for source in sources:
    for sentence in source:
        if written == count:
            break
        print(json.dumps(sentence))
        written += 1
if written < count:
    sys.exit(f"only {written} sentences in {data}, asked for {count}")
EOF

echo "== $(date -u '+%Y-%m-%d %H:%M UTC'), $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs"
echo "== model $model; $count sentences, $threads threads, batch $batch"
load_before=$(uptime | sed 's/.*load average: //')
echo "== load before: $load_before"
export OMP_NUM_THREADS=$threads
for ((round = 1; round <= rounds; ++round)); do
  echo "== round $round/$rounds: accel-embed"
  "$build/bin/accel-embed" --model "$model" --jsonl --threads "$threads" --batch-size "$batch" \
    < "$sentences" > "$logs/accel_$round.jsonl" 2> "$logs/accel_$round.log"
  tail -n 1 "$logs/accel_$round.log"
  echo "== round $round/$rounds: sentence-transformers"
  # The environment's OpenBLAS overrides are for other programs; PyTorch runs with its defaults.
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 "$root/bench/embed_torch.py" --model "$model" \
    --input "$sentences" --threads "$threads" --batch-size "$batch" --save "$logs/torch_$round.npy" \
    > "$logs/torch_$round.log" 2> "$logs/torch_$round.err"
  if ((round == 1)); then sed -n '1,/^embed_torch:/p' "$logs/torch_$round.log"; fi
  tail -n 1 "$logs/torch_$round.log"
done
load_after=$(uptime | sed 's/.*load average: //')
echo "== load after: $load_after"

echo
python3 - "$logs" "$rounds" "$threads" "$batch" "$load_before" "$load_after" <<'EOF'
import json
import re
import sys

import numpy as np

logs, rounds, threads, batch, load_before, load_after = sys.argv[1], int(sys.argv[2]), *sys.argv[3:7]
accel, torch = [], []
for r in range(1, rounds + 1):
    match = re.search(r"([0-9.]+) sentences/s", open(f"{logs}/accel_{r}.log").read())
    accel.append(float(match.group(1)))
    torch.append(json.loads(open(f"{logs}/torch_{r}.log").read().splitlines()[-1])["sentences_per_s"])

# Agreement: every accel run against the first torch run, sentence by sentence.
reference = np.load(f"{logs}/torch_1.npy").astype(np.float64)
min_cosine, worst = 1.0, None  # worst: (accel run, line in sentences.jsonl)
for r in range(1, rounds + 1):
    rows = np.array([json.loads(line) for line in open(f"{logs}/accel_{r}.jsonl")], dtype=np.float64)
    if rows.shape != reference.shape:
        sys.exit(f"accel run {r} wrote embeddings of shape {rows.shape}, torch {reference.shape}")
    cosines = (rows * reference).sum(1) / (np.linalg.norm(rows, axis=1) * np.linalg.norm(reference, axis=1))
    if cosines.min() < min_cosine:
        min_cosine, worst = cosines.min(), (r, int(cosines.argmin()) + 1)

print(f"| sentences/s ({threads} threads, batch {batch}) | runs | best |")
print("|---|---|--:|")
print(f"| accel-embed | {', '.join(f'{v:.1f}' for v in accel)} | {max(accel):.1f} |")
print(f"| sentence-transformers (PyTorch) | {', '.join(f'{v:.1f}' for v in torch)} | {max(torch):.1f} |")
print(f"| accel / torch | | {max(accel) / max(torch):.2f}x |")
print(f"\nload average (1, 5, 15 min) before the runs: {load_before}; after: {load_after}"
      f" (the runs themselves add about {threads})")
print(f"min cosine accel vs torch over {len(reference)} sentences: {min_cosine:.12f}")
if min_cosine < 0.99999:
    sys.exit(f"embeddings disagree: cosine {min_cosine:.9f} < 0.99999 (accel run {worst[0]}, line {worst[1]} "
             "of sentences.jsonl)")
EOF
