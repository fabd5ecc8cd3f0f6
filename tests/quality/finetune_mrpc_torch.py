#!/usr/bin/env python3
"""PyTorch + transformers reference for accel-finetune's MRPC recipe.

Fine-tunes the same all-MiniLM-L6-v2 directory on the same bundled MRPC files with the same
recipe as scripts/finetune_mrpc.sh (AdamW lr 5e-5, weight decay 0.01 except biases and
LayerNorm weights, linear warm-up over 10% of the steps then linear decay, batch 32, max
length 128 with longest_first truncation, 3 epochs, gradient clipping at 1.0, dropout as in
the config), evaluates on dev after each epoch and prints one JSON line with the best
epoch's accuracy and F1, as accel-finetune's metrics.json reports them. On the way it prints
accel-finetune's progress lines (`epoch E step S/N loss L lr LR`: that batch's loss, every
10th step and the last), so that docs/diagrams/loss_curves.py can draw both runs' losses.

    python3 tests/quality/finetune_mrpc_torch.py --model DIR --seed 42 [--threads 2]
"""
import argparse
import csv
import json
import random
import time

import numpy as np
import torch
from transformers import AutoTokenizer, BertForSequenceClassification, get_linear_schedule_with_warmup


def read_mrpc(path):
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        for r in reader:
            rows.append((r[3], r[4], int(r[0])))
    return rows


def batches(encoded, labels, batch_size, order, pad_id):
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        length = max(len(encoded[i]["input_ids"]) for i in idx)
        ids = torch.full((len(idx), length), pad_id, dtype=torch.long)
        types = torch.zeros((len(idx), length), dtype=torch.long)
        mask = torch.zeros((len(idx), length), dtype=torch.long)
        for row, i in enumerate(idx):
            n = len(encoded[i]["input_ids"])
            ids[row, :n] = torch.tensor(encoded[i]["input_ids"])
            types[row, :n] = torch.tensor(encoded[i]["token_type_ids"])
            mask[row, :n] = 1
        yield ids, mask, types, torch.tensor([labels[i] for i in idx])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--train", default="data/mrpc/train.tsv")
    parser.add_argument("--eval", default="data/mrpc/dev.tsv")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = BertForSequenceClassification.from_pretrained(args.model, num_labels=2)
    train, dev = read_mrpc(args.train), read_mrpc(args.eval)
    enc = lambda rows: [tokenizer(a, b, truncation="longest_first", max_length=128) for a, b, _ in rows]
    train_enc, dev_enc = enc(train), enc(dev)
    train_labels, dev_labels = [r[2] for r in train], [r[2] for r in dev]

    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)], "weight_decay": 0.01},
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=args.lr)
    steps_per_epoch = (len(train) + args.batch_size - 1) // args.batch_size
    total = steps_per_epoch * args.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.1 * total), total)

    best, history, start, step = None, [], time.time(), 0
    generator = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(train), generator=generator).tolist()
        for ids, mask, types, labels in batches(train_enc, train_labels, args.batch_size, order, tokenizer.pad_token_id):
            loss = model(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            if step % 10 == 0 or step == total:
                lr = scheduler.get_last_lr()[0]
                print(f"epoch {epoch + 1} step {step}/{total} loss {loss.item():.4f} lr {lr:.2g}", flush=True)
        model.eval()
        predictions = []
        with torch.no_grad():
            for ids, mask, types, _ in batches(dev_enc, dev_labels, 64, list(range(len(dev))), tokenizer.pad_token_id):
                predictions += model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits.argmax(-1).tolist()
        tp = sum(p == 1 and l == 1 for p, l in zip(predictions, dev_labels))
        fp = sum(p == 1 and l == 0 for p, l in zip(predictions, dev_labels))
        fn = sum(p == 0 and l == 1 for p, l in zip(predictions, dev_labels))
        accuracy = sum(p == l for p, l in zip(predictions, dev_labels)) / len(dev_labels)
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        history.append({"epoch": epoch + 1, "accuracy": accuracy, "f1": f1})
        if best is None or accuracy > best["accuracy"]:
            best = {"accuracy": accuracy, "f1": f1}
    print(json.dumps({"framework": "torch", "seed": args.seed, "torch": torch.__version__, **best,
                      "history": history, "seconds": round(time.time() - start, 1)}))


if __name__ == "__main__":
    main()
