#!/usr/bin/env python3
"""The PyTorch side of bench/bert_step.sh: one BERT training step (forward, backward, AdamW)
or one forward, at the same shapes, threads and random-token inputs as bench_bert_step, with
PyTorch's own fast paths (bf16 through torch.autocast, AdamW foreach). Prints the same JSON."""
import argparse
import json
import resource
import time

import torch
from transformers import BertConfig, BertForSequenceClassification


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="minilm")
    p.add_argument("--dtype", default="f32")
    p.add_argument("--mode", default="train")
    p.add_argument("--batch", type=int, default=0)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--show-config", action="store_true")
    a = p.parse_args()
    if a.show_config:
        print(torch.__config__.show())
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    batch = a.batch or (32 if a.model == "minilm" else 8)
    kwargs = dict(hidden_size=384, num_hidden_layers=6, intermediate_size=1536) if a.model == "minilm" else {}
    model = BertForSequenceClassification(BertConfig(**kwargs))
    ids = torch.randint(1, 30522, (batch, a.seq))
    mask = torch.ones(batch, a.seq, dtype=torch.long)
    types = torch.zeros(batch, a.seq, dtype=torch.long)
    labels = torch.randint(0, 2, (batch,))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    bf16 = a.dtype == "bf16"
    train = a.mode == "train"
    model.train(train)
    times = []
    for step in range(a.warmup + a.steps):
        start = time.perf_counter()
        if train:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        else:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                model(input_ids=ids, attention_mask=mask, token_type_ids=types)
        ms = (time.perf_counter() - start) * 1e3
        if step >= a.warmup:
            times.append(ms)
    times.sort()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"torch {a.model} {a.dtype} {a.mode} batch {batch} seq {a.seq} threads {torch.get_num_threads()}: "
          f"{times[len(times) // 2]:.1f} ms/step (min {times[0]:.1f}), peak RSS {peak:.0f} MB")
    print(json.dumps({"impl": "torch", "model": a.model, "dtype": a.dtype, "mode": a.mode,
                      "ms": round(times[len(times) // 2], 2), "peak_mb": round(peak)}))


if __name__ == "__main__":
    main()
