"""PyTorch side of the sentence-embedding benchmark: times sentence-transformers' encode() on
the JSON Lines sentences that bench/embed.sh also gives accel-embed, with the same thread
count and batch size, and prints one JSON line with the throughput for embed.sh to read.
encode() tokenizes, sorts by length, batches, pools and normalizes, so the timed work is the
same as accel-embed's timed region. One short untimed encode first warms PyTorch up. It is a
benchmark, not a test; embed.sh compares the saved embeddings with accel's.

Usage: python3 embed_torch.py --model DIR --input SENTENCES.jsonl [--threads N]
                              [--batch-size B] [--save EMBEDDINGS.npy]
"""
import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is a local directory; never reach the Hub

import numpy as np
import torch
from sentence_transformers import SentenceTransformer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="sentence-transformers model directory")
    parser.add_argument("--input", required=True, help="JSON Lines file, one JSON string per line")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--save", help="write the embeddings here (.npy, input order)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with open(args.input, encoding="utf-8") as f:
        sentences = [json.loads(line) for line in f]

    print(torch.__config__.show())
    model = SentenceTransformer(args.model, device="cpu")
    model.encode(sentences[:2 * args.batch_size], batch_size=args.batch_size)  # warm-up, untimed
    start = time.perf_counter()
    embeddings = model.encode(sentences, batch_size=args.batch_size, convert_to_numpy=True)
    seconds = time.perf_counter() - start
    if args.save:
        np.save(args.save, embeddings)
    print(f"embed_torch: torch {torch.__version__}, sentence-transformers, {torch.get_num_threads()} threads, "
          f"batch {args.batch_size}, {model.max_seq_length} max tokens")
    print(json.dumps({"sentences": len(sentences), "seconds": round(seconds, 4),
                      "sentences_per_s": round(len(sentences) / seconds, 2)}))


if __name__ == "__main__":
    main()
