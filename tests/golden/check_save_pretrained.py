#!/usr/bin/env python3
# check_save_pretrained.py: loads a BERT classifier directory that accel's save_pretrained
# wrote, with transformers, and checks that transformers computes the reference logits on
# the golden batch. The other half of tests/models/test_bert.cc's round trip, which CI
# cannot run (it needs PyTorch). What it is not: a general checkpoint validator; it expects
# a save of the tiny golden classifier (tests/golden/bert/tiny).
#
#     ACCEL_KEEP_SAVED_BERT_DIR=/tmp/accel_saved_bert \
#         build/bin/test_bert --gtest_filter=BertPretrained.SavePretrainedRoundTrip
#     python3 tests/golden/check_save_pretrained.py /tmp/accel_saved_bert
#
# Fails (exit status 1) when transformers reports missing, unexpected or mismatched weights,
# or when the logits differ from the golden file's by more than 1e-5 relative + 1e-6.

import argparse
import os
import sys

import torch
from safetensors.torch import load_file
from transformers import BertForSequenceClassification

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bert", "tiny_golden.safetensors")


def main():
    parser = argparse.ArgumentParser(description="Checks that transformers loads a BERT directory saved by accel.")
    parser.add_argument("model_dir", help="a directory written by accel::models::save_pretrained")
    parser.add_argument("--golden", default=GOLDEN, help="golden file with the batch and reference logits")
    args = parser.parse_args()

    golden = load_file(args.golden)
    model, info = BertForSequenceClassification.from_pretrained(args.model_dir, output_loading_info=True,
                                                                attn_implementation="eager")
    model.eval()
    problems = {k: v for k, v in info.items() if v}
    if problems:
        print(f"FAIL: transformers reported loading problems: {problems}")
        return 1
    with torch.no_grad():
        logits = model(golden["input_ids"], golden["attention_mask"], golden["token_type_ids"]).logits
    expected = golden["logits"]
    error = (logits - expected).abs().max().item()
    if not torch.allclose(logits, expected, rtol=1e-5, atol=1e-6):
        print(f"FAIL: logits differ from {args.golden}: max abs error {error:.3g}\n{logits}\n{expected}")
        return 1
    print(f"OK: transformers loads {args.model_dir} with no missing/unexpected weights; "
          f"logits {tuple(logits.shape)} match the reference, max abs error {error:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
