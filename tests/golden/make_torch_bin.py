#!/usr/bin/env python3
# make_torch_bin.py: torch.save files for tests/models/test_torch_pickle.cc, which checks
# accel's tensors-only unpickler (models/torch_pickle.cc) against what PyTorch wrote. What it
# is not: a test, nor needed by CI (the outputs are committed; rerunning needs PyTorch and
# transformers, and the tiny BERT from make_bert_goldens.py).
#
# Rerun from the repository root:
#     python3 tests/golden/make_torch_bin.py
#
# Writes:
#   bert/tiny_bin/pytorch_model.bin   torch.save(model.state_dict()) of bert/tiny, the old
#   bert/tiny_bin/config.json         checkpoint layout, to load beside bert/tiny's safetensors
#   torch_pickle/tensors.bin          every dtype accel has, plus the layouts torch.save keeps:
#                                     transposed, sliced (storage offset), expanded (stride 0),
#                                     permuted, views sharing one storage, 0-d, empty, an
#                                     nn.Parameter (pickled through _rebuild_parameter)
#   torch_pickle/tensors.safetensors  the same tensors made contiguous: the expected values
#   torch_pickle/malicious.bin        a torch.save-shaped archive whose pickle calls
#                                     os.system("echo accel-was-pwned") through GLOBAL + REDUCE;
#                                     a loader that runs it prints the message
import os
import shutil
import zipfile

import torch
from safetensors.torch import save_file
from transformers import BertForSequenceClassification

GOLDEN = os.path.dirname(os.path.abspath(__file__))


def tiny_bin():
    source = os.path.join(GOLDEN, "bert", "tiny")
    out = os.path.join(GOLDEN, "bert", "tiny_bin")
    os.makedirs(out, exist_ok=True)
    model = BertForSequenceClassification.from_pretrained(source)
    torch.save(model.state_dict(), os.path.join(out, "pytorch_model.bin"))
    shutil.copyfile(os.path.join(source, "config.json"), os.path.join(out, "config.json"))


def layouts():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    tensors = {
        "float32": torch.randn(3, 5, generator=g),
        "float64": torch.randn(2, 3, dtype=torch.float64, generator=g),
        "float16": torch.randn(7, generator=g).half(),
        "bfloat16": torch.randn(2, 2, 3, generator=g).bfloat16(),
        "int64": torch.tensor([[2**40, -(2**62), 7], [0, -1, 2**63 - 1]]),
        "int32": torch.randint(-(2**31), 2**31 - 1, (5,), dtype=torch.int32, generator=g),
        "bool": torch.rand(9, generator=g) > 0.5,
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
        "base": base,
        "transposed": base.t(),  # stride (1, 6), same storage as base
        "sliced": base[1:3, 2:5],  # storage offset 8, same storage as base
        "expanded": torch.randn(3, 1, generator=g).expand(3, 4),  # stride (1, 0)
        "permuted_bfloat16": torch.randn(2, 3, 4, generator=g).bfloat16().permute(2, 0, 1),
        "parameter": torch.nn.Parameter(torch.randn(2, 2, generator=g)),
    }
    out = os.path.join(GOLDEN, "torch_pickle")
    os.makedirs(out, exist_ok=True)
    torch.save(tensors, os.path.join(out, "tensors.bin"))
    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()},
              os.path.join(out, "tensors.safetensors"))


def malicious():
    # PROTO 2; GLOBAL 'os system'; BINUNICODE command; TUPLE1; REDUCE; STOP
    command = b"echo accel-was-pwned"
    pickle = (b"\x80\x02cos\nsystem\nq\x00X" + len(command).to_bytes(4, "little") + command +
              b"q\x01\x85q\x02Rq\x03.")
    with zipfile.ZipFile(os.path.join(GOLDEN, "torch_pickle", "malicious.bin"), "w", zipfile.ZIP_STORED) as z:
        z.writestr("malicious/data.pkl", pickle)
        z.writestr("malicious/byteorder", b"little")
        z.writestr("malicious/version", b"3\n")


if __name__ == "__main__":
    tiny_bin()
    layouts()
    malicious()
