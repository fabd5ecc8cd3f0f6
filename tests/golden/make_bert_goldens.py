#!/usr/bin/env python3
# make_bert_goldens.py: builds tiny random BERTs with transformers, saves them as Hugging Face
# directories, and records what transformers computes on a fixed batch, for
# tests/models/test_bert.cc. What it is not: a test (the C++ test is), nor needed by CI (the
# generated files are committed; only regenerating them needs PyTorch and transformers).
#
# Rerun from the repository root:
#     python3 tests/golden/make_bert_goldens.py   # rewrites tests/golden/bert/
#
# Three models, each a directory written by save_pretrained (config.json + model.safetensors)
# and a golden file beside them:
#   tiny/            BertForSequenceClassification, hidden_act "gelu" (erf form), 3 labels
#   tiny_gelu_new/   BertModel with a pooler, hidden_act "gelu_new" (tanh form), other sizes
#                    and layer_norm_eps, to catch a field read from the wrong place
#   tiny_regression/ BertForSequenceClassification with num_labels 1: float labels, MSE loss
# Every dropout probability is 0, so forward and backward are deterministic.
#
# <case>_golden.safetensors holds the batch and the outputs:
#   input_ids, attention_mask, token_type_ids   (3, 11) int64; rows padded to 11, 8, 5 tokens
#   labels                                      (3,) int64 classes, or float32 regression targets
#   last_hidden_state (3, 11, hidden), pooler_output (3, hidden)
#   logits (3, num_labels), loss ()              classifiers only
#   grad.<HF parameter name>                     d loss / d parameter, every parameter
#   adamw_losses (11,)                           tiny only: loss after k = 0..10 AdamW steps
#   adamw.<HF parameter name>                    tiny only: the parameter after the 10 steps
# For the BertModel case there is no head, so the loss is a fixed random projection of both
# outputs, loss = sum(last_hidden_state * weight_last_hidden_state) + sum(pooler_output *
# weight_pooler_output), with both weights stored.
#
# The AdamW run is the Hugging Face recipe: torch.optim.AdamW(lr 1e-3, weight_decay 0.01) over
# two groups, no decay on biases and LayerNorm weights; each step runs the same batch.
# Ten steps of weight decay 0.01 at lr 1e-3 move the losses by only ~5e-5 relative, below
# the test's tolerance, so the final parameters are stored too: decaying the LayerNorm
# weights (~1) by mistake shifts them by ~1e-4, which the test sees.
# PyTorch runs single-threaded with the "eager" attention (the reference implementation in
# modeling_bert.py), so reruns reproduce the numbers on the same versions.

import json
import os
import struct

import torch
from transformers import BertConfig, BertForSequenceClassification, BertModel

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bert")
SAFETENSORS_DTYPES = {torch.float32: "F32", torch.int64: "I64"}

BASE = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, type_vocab_size=2, hidden_act="gelu", hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0, initializer_range=0.1)
CASES = {
    "tiny": dict(BASE, num_labels=3),
    "tiny_gelu_new": dict(BASE, hidden_size=24, num_attention_heads=3, intermediate_size=29, hidden_act="gelu_new",
                          layer_norm_eps=1e-7),
    "tiny_regression": dict(BASE, num_labels=1),
}
LENGTHS = (11, 8, 5)  # real tokens per row; the rest is padding (id 0, mask 0)


def save_safetensors(path, tensors, metadata):
    """Writes safetensors deterministically (sorted header, data ordered by element size)."""
    names = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for k in names:
        t = tensors[k].detach().contiguous()
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[k] = {"dtype": SAFETENSORS_DTYPES[t.dtype], "shape": list(t.shape),
                     "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def make_batch(vocab_size, generator):
    batch, seq = len(LENGTHS), max(LENGTHS)
    input_ids = torch.zeros(batch, seq, dtype=torch.int64)
    attention_mask = torch.zeros(batch, seq, dtype=torch.int64)
    token_type_ids = torch.zeros(batch, seq, dtype=torch.int64)
    for row, length in enumerate(LENGTHS):
        input_ids[row, :length] = torch.randint(1, vocab_size, (length,), generator=generator)
        attention_mask[row, :length] = 1
        token_type_ids[row, length // 2:length] = 1  # a sentence pair: second half is segment B
    return input_ids, attention_mask, token_type_ids


def gradients(model):
    return {f"grad.{name}": p.grad.detach().clone() for name, p in model.named_parameters()}


def adamw_losses(model, batch, labels):
    no_decay = ("bias", "LayerNorm.weight")
    params = list(model.named_parameters())
    groups = [{"params": [p for n, p in params if not any(nd in n for nd in no_decay)], "weight_decay": 0.01},
              {"params": [p for n, p in params if any(nd in n for nd in no_decay)], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    losses = []
    for step in range(11):
        optimizer.zero_grad()
        loss = model(*batch, labels=labels).loss
        losses.append(loss.item())
        if step < 10:
            loss.backward()
            optimizer.step()
    final = {f"adamw.{name}": p.detach().clone() for name, p in params}
    return torch.tensor(losses, dtype=torch.float32), final


def make_case(name, fields, seed):
    torch.manual_seed(seed)
    config = BertConfig(**fields, attn_implementation="eager")
    classifier = "num_labels" in fields
    model = (BertForSequenceClassification if classifier else BertModel)(config).eval()
    model.config._attn_implementation = "eager"
    model_dir = os.path.join(OUT_DIR, name)
    model.save_pretrained(model_dir, safe_serialization=True)

    generator = torch.Generator().manual_seed(seed + 1)
    batch = make_batch(config.vocab_size, generator)
    golden = dict(zip(("input_ids", "attention_mask", "token_type_ids"), batch))
    bert = model.bert if classifier else model
    encoded = bert(*batch)
    if classifier:
        if config.num_labels == 1:
            labels = torch.randn(len(LENGTHS), generator=generator)
        else:
            labels = torch.randint(0, config.num_labels, (len(LENGTHS),), generator=generator)
        out = model(*batch, labels=labels)
        out.loss.backward()
        golden.update(labels=labels, logits=out.logits, loss=out.loss)
    else:
        w_hidden = torch.randn(encoded.last_hidden_state.shape, generator=generator)
        w_pooler = torch.randn(encoded.pooler_output.shape, generator=generator)
        loss = (encoded.last_hidden_state * w_hidden).sum() + (encoded.pooler_output * w_pooler).sum()
        loss.backward()
        golden.update(weight_last_hidden_state=w_hidden, weight_pooler_output=w_pooler, loss=loss)
    golden.update(last_hidden_state=encoded.last_hidden_state, pooler_output=encoded.pooler_output)
    golden.update(gradients(model))
    if name == "tiny":
        golden["adamw_losses"], final = adamw_losses(model, batch, golden["labels"])
        golden.update(final)
    golden = {k: v.detach().float() if v.is_floating_point() else v for k, v in golden.items()}
    save_safetensors(os.path.join(OUT_DIR, f"{name}_golden.safetensors"), golden,
                     {"torch": torch.__version__, "case": name})
    print(f"{name}: {len(golden)} tensors, loss {golden['loss'].item():.6f}")


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT_DIR, exist_ok=True)
    for seed, (name, fields) in enumerate(CASES.items()):
        make_case(name, fields, 1000 + 10 * seed)


if __name__ == "__main__":
    main()
