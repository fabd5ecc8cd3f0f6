#!/usr/bin/env python3
# make_op_goldens.py: writes the per-op golden files that tests/core/test_golden_ops.cc checks
# accel against. What it is not: a test runner (the C++ test is), nor needed by CI (the
# generated files are committed; only regenerating them needs PyTorch).
#
# Rerun from the repository root:
#     python3 tests/golden/make_op_goldens.py               # rewrites tests/golden/ops/*.safetensors
#     python3 tests/golden/make_op_goldens.py --self-check  # also checks the tolerances (see below)
#
# Each case becomes tests/golden/ops/<case>.safetensors holding
#   input.0, input.1, ...  the op's tensor inputs (floats random, indices int64, masks bool)
#   output                 the forward result
#   indices                (max_dim only) the argmax indices returned beside the values
#   grad_output            random upstream gradient shaped like output (absent when the
#                          output is not differentiable, e.g. argmax)
#   grad.0, grad.1, ...    d(output . grad_output)/d(input.i) for every float input that
#                          receives a gradient; absent for index/mask inputs
# and __metadata__ {"op": accel op name, "params": JSON of the op's arguments in accel's
# terms, "dtype": "float32" | "bfloat16"}. Cases named *_bf16 run the same op on bfloat16
# inputs on the CPU and store what PyTorch produces there, in bfloat16.
#
# One deliberate departure from "as PyTorch produces it": PyTorch's CPU bf16 layer_norm
# backward accumulates the weight and bias gradients in bf16 (row after row, each sum rounded),
# which is 3x outside the bf16 tolerance of an fp32-accumulating kernel such as accel's
# (ARCHITECTURE.md: layernorm runs in fp32). For such cases (`fp32_grads` below) those
# gradients are computed in float32 from the same bf16 inputs and grad_output and rounded once
# to bf16; the file's metadata "note" says so.
#
# Seeds are fixed per case (crc32 of the case name), PyTorch runs single-threaded and the
# files are written by save_safetensors() below with a sorted header (the safetensors
# package orders __metadata__ differently from run to run), so reruns reproduce the files
# byte for byte on the same PyTorch version.
#
# --self-check recomputes every case in higher precision (float64 for float32 cases, float32
# from the same bf16 inputs for bf16 cases) and prints, per case, how much of the C++ test's
# tolerance PyTorch's own rounding uses. A ratio well below 1 means an accurate accel kernel
# that rounds differently from PyTorch still passes.

import argparse
import json
import math
import os
import struct
import sys
import zlib

import torch
import torch.nn.functional as F

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ops")

# Tolerances of tests/core/test_golden_ops.cc, mirrored here for --self-check only.
TOL_F32 = (1e-5, 1e-6)         # (rtol, atol)
TOL_F32_GEMM = (1e-4, 1e-5)
TOL_BF16 = (1e-2, 1e-2)
GEMM_OPS = {"matmul", "linear"}


class Case:
    def __init__(self, name, op, params, make_inputs, fn, bf16=False, fp32_grads=()):
        self.name = name              # file name stem
        self.op = op                  # accel op name (the C++ table key)
        self.params = params          # dict, stored as JSON
        self.make_inputs = make_inputs  # () -> list of tensors (floats in float32)
        self.fn = fn                  # (inputs, params) -> output or (output, extras dict)
        self.bf16 = bf16              # also emit <name>_bf16
        self.fp32_grads = fp32_grads  # bf16 case: grad.i taken from a float32 recomputation


CASES = []


def case(name, op, params, make_inputs, fn, bf16=False, fp32_grads=()):
    CASES.append(Case(name, op, params, make_inputs, fn, bf16, fp32_grads))


def randn(*shape):
    return torch.randn(*shape, dtype=torch.float32)


def positive(*shape, low=0.5, high=2.0):
    return torch.rand(*shape, dtype=torch.float32) * (high - low) + low


def away_from_zero(*shape, low=0.5, high=2.0):
    sign = torch.where(torch.rand(*shape) < 0.5, -1.0, 1.0)
    return positive(*shape, low=low, high=high) * sign


# ---- pointwise ----
case("add", "add", {"alpha": 1}, lambda: [randn(3, 4, 5), randn(3, 4, 5)],
     lambda x, p: torch.add(x[0], x[1], alpha=p["alpha"]), bf16=True)
case("sub", "sub", {"alpha": 2}, lambda: [randn(3, 4, 5), randn(1, 4, 1)],
     lambda x, p: torch.sub(x[0], x[1], alpha=p["alpha"]))
case("mul", "mul", {}, lambda: [randn(3, 1, 5), randn(4, 5)],
     lambda x, p: torch.mul(x[0], x[1]), bf16=True)
case("div", "div", {}, lambda: [randn(3, 4, 5), away_from_zero(3, 4, 5)],
     lambda x, p: torch.div(x[0], x[1]))
case("pow", "pow", {}, lambda: [positive(3, 4, 5), randn(3, 4, 5)],
     lambda x, p: torch.pow(x[0], x[1]))
case("pow_scalar", "pow_scalar", {"exponent": 3.0}, lambda: [randn(3, 4, 5)],
     lambda x, p: torch.pow(x[0], p["exponent"]))
case("maximum", "maximum", {}, lambda: [randn(4, 5), randn(4, 5)],
     lambda x, p: torch.maximum(x[0], x[1]))
case("minimum", "minimum", {}, lambda: [randn(4, 5), randn(4, 5)],
     lambda x, p: torch.minimum(x[0], x[1]))
case("neg", "neg", {}, lambda: [randn(3, 4, 5)], lambda x, p: torch.neg(x[0]))
case("abs", "abs", {}, lambda: [randn(3, 4, 5)], lambda x, p: torch.abs(x[0]))
case("exp", "exp", {}, lambda: [randn(3, 4, 5)], lambda x, p: torch.exp(x[0]), bf16=True)
case("log", "log", {}, lambda: [positive(3, 4, 5, low=0.1, high=5.0)], lambda x, p: torch.log(x[0]))
case("sqrt", "sqrt", {}, lambda: [positive(3, 4, 5, low=0.1, high=5.0)], lambda x, p: torch.sqrt(x[0]))
case("rsqrt", "rsqrt", {}, lambda: [positive(3, 4, 5, low=0.1, high=5.0)], lambda x, p: torch.rsqrt(x[0]))
case("tanh", "tanh", {}, lambda: [randn(3, 4, 5) * 2], lambda x, p: torch.tanh(x[0]), bf16=True)
case("sigmoid", "sigmoid", {}, lambda: [randn(3, 4, 5) * 2], lambda x, p: torch.sigmoid(x[0]), bf16=True)
case("relu", "relu", {}, lambda: [randn(3, 4, 5)], lambda x, p: torch.relu(x[0]))
case("gelu", "gelu", {"approximate": "none"}, lambda: [randn(3, 4, 5) * 2],
     lambda x, p: F.gelu(x[0], approximate=p["approximate"]), bf16=True)
case("gelu_tanh", "gelu", {"approximate": "tanh"}, lambda: [randn(3, 4, 5) * 2],
     lambda x, p: F.gelu(x[0], approximate=p["approximate"]))
case("erf", "erf", {}, lambda: [randn(3, 4, 5)], lambda x, p: torch.erf(x[0]))
case("clamp", "clamp", {"min": -0.5, "max": 0.5}, lambda: [randn(3, 4, 5)],
     lambda x, p: torch.clamp(x[0], min=p["min"], max=p["max"]))


def where_inputs():
    return [randn(3, 4, 5) > 0, randn(3, 4, 5), randn(4, 5)]  # b broadcasts


case("where", "where", {}, where_inputs, lambda x, p: torch.where(x[0], x[1], x[2]))
case("masked_fill", "masked_fill", {"value": -1e4}, lambda: [randn(3, 4, 5), randn(3, 4, 5) > 0.3],
     lambda x, p: x[0].masked_fill(x[1], p["value"]))

# ---- reductions ----
case("sum", "sum", {"dims": [0, 2], "keepdim": False}, lambda: [randn(3, 4, 5)],
     lambda x, p: torch.sum(x[0], dim=p["dims"], keepdim=p["keepdim"]))
case("sum_all", "sum", {"dims": [], "keepdim": False}, lambda: [randn(3, 4, 5)],
     lambda x, p: torch.sum(x[0]))
case("mean", "mean", {"dims": [1], "keepdim": True}, lambda: [randn(3, 4, 5)],
     lambda x, p: torch.mean(x[0], dim=p["dims"], keepdim=p["keepdim"]))


def max_dim(x, p):
    values, indices = torch.max(x[0], dim=p["dim"], keepdim=p["keepdim"])
    return values, {"indices": indices}


case("max_dim", "max_dim", {"dim": 1, "keepdim": False}, lambda: [randn(3, 6, 5)], max_dim)
case("amax", "amax", {"dims": [1], "keepdim": True}, lambda: [randn(3, 6, 5)],
     lambda x, p: torch.amax(x[0], dim=p["dims"], keepdim=p["keepdim"]))
case("argmax", "argmax", {"dim": -1, "keepdim": False}, lambda: [randn(3, 4, 7)],
     lambda x, p: torch.argmax(x[0], dim=p["dim"], keepdim=p["keepdim"]))
case("var", "var", {"dims": [1], "correction": 1, "keepdim": False}, lambda: [randn(4, 6, 5)],
     lambda x, p: torch.var(x[0], dim=p["dims"], correction=p["correction"], keepdim=p["keepdim"]))
case("std", "std", {"dims": [0, 1], "correction": 0, "keepdim": False}, lambda: [randn(4, 6, 5)],
     lambda x, p: torch.std(x[0], dim=p["dims"], correction=p["correction"], keepdim=p["keepdim"]))

# ---- linear algebra ----
matmul = lambda x, p: torch.matmul(x[0], x[1])  # noqa: E731
case("matmul_2d", "matmul", {}, lambda: [randn(64, 48), randn(48, 32)], matmul, bf16=True)
case("matmul_batched", "matmul", {}, lambda: [randn(2, 3, 8, 16), randn(16, 5)], matmul, bf16=True)
case("matmul_broadcast", "matmul", {}, lambda: [randn(2, 1, 4, 6), randn(3, 6, 5)], matmul)
case("matmul_vec_mat", "matmul", {}, lambda: [randn(6), randn(6, 5)], matmul)
case("matmul_mat_vec", "matmul", {}, lambda: [randn(4, 6), randn(6)], matmul)
case("matmul_vec_vec", "matmul", {}, lambda: [randn(7), randn(7)], matmul)
case("linear", "linear", {}, lambda: [randn(4, 7, 16), randn(12, 16), randn(12)],
     lambda x, p: F.linear(x[0], x[1], x[2]), bf16=True)
case("linear_no_bias", "linear", {}, lambda: [randn(5, 16), randn(12, 16)],
     lambda x, p: F.linear(x[0], x[1]))

# ---- neural-network functions ----
case("softmax", "softmax", {"dim": -1}, lambda: [randn(4, 6, 10) * 2],
     lambda x, p: torch.softmax(x[0], dim=p["dim"]), bf16=True)
case("softmax_dim1", "softmax", {"dim": 1}, lambda: [randn(3, 7, 4) * 2],
     lambda x, p: torch.softmax(x[0], dim=p["dim"]))
case("log_softmax", "log_softmax", {"dim": -1}, lambda: [randn(4, 6, 10) * 2],
     lambda x, p: torch.log_softmax(x[0], dim=p["dim"]))


def layer_norm(x, p):
    w = x[1] if len(x) > 1 else None
    b = x[2] if len(x) > 2 else None
    return F.layer_norm(x[0], p["normalized_shape"], w, b, p["eps"])


case("layer_norm", "layer_norm", {"normalized_shape": [32], "eps": 1e-12},
     lambda: [randn(4, 6, 32) * 2 + 0.5, 1 + 0.1 * randn(32), 0.1 * randn(32)], layer_norm, bf16=True,
     fp32_grads=(1, 2))
case("layer_norm_2d", "layer_norm", {"normalized_shape": [4, 8], "eps": 1e-5},
     lambda: [randn(3, 4, 8), 1 + 0.1 * randn(4, 8), 0.1 * randn(4, 8)], layer_norm)
case("layer_norm_no_affine", "layer_norm", {"normalized_shape": [16], "eps": 1e-5},
     lambda: [randn(5, 16)], layer_norm)


def embedding_inputs():
    indices = torch.randint(0, 10, (3, 4), dtype=torch.int64)
    indices[0, 1] = 0   # the padding row appears...
    indices[2, 3] = 0   # ...twice
    indices[1, 2] = indices[0, 0] = 7  # a repeated non-padding row accumulates
    return [randn(10, 6), indices]


case("embedding", "embedding", {"padding_idx": 0}, embedding_inputs,
     lambda x, p: F.embedding(x[1], x[0], padding_idx=p["padding_idx"]))


def ce_inputs():
    target = torch.randint(0, 5, (8,), dtype=torch.int64)
    target[3] = -100
    return [randn(8, 5) * 2, target]


def ce(x, p):
    return F.cross_entropy(x[0], x[1], ignore_index=p["ignore_index"], reduction=p["reduction"],
                           label_smoothing=p["label_smoothing"])


def ce_params(reduction="mean", label_smoothing=0.0, ignore_index=-100):
    return {"ignore_index": ignore_index, "reduction": reduction, "label_smoothing": label_smoothing}


case("cross_entropy", "cross_entropy", ce_params(), ce_inputs, ce)
case("cross_entropy_sum", "cross_entropy", ce_params("sum"), ce_inputs, ce)
case("cross_entropy_smoothing", "cross_entropy", ce_params("mean", 0.1), ce_inputs, ce, bf16=True)
case("cross_entropy_none_smoothing", "cross_entropy", ce_params("none", 0.2), ce_inputs, ce)
case("cross_entropy_sum_smoothing", "cross_entropy", ce_params("sum", 0.3), ce_inputs, ce)


def ce_class_ignored_inputs():
    target = torch.tensor([2, 0, 4, 2, 1, 3, 2, 0], dtype=torch.int64)  # class 2 is the ignore_index
    return [randn(8, 5) * 2, target]


case("cross_entropy_ignore_class", "cross_entropy", ce_params("mean", 0.1, ignore_index=2),
     ce_class_ignored_inputs, ce)


def ce_wide_inputs():
    # Rows of 1003 classes: the fused kernel's vectorized exp runs 125 full vectors and a tail.
    target = torch.randint(0, 1003, (4,), dtype=torch.int64)
    target[2] = -100
    return [randn(4, 1003) * 3, target]


case("cross_entropy_wide", "cross_entropy", ce_params("mean", 0.1), ce_wide_inputs, ce, bf16=True)


def ce3d_inputs():
    target = torch.randint(0, 5, (2, 3), dtype=torch.int64)
    target[1, 0] = -100
    return [randn(2, 5, 3) * 2, target]


case("cross_entropy_3d", "cross_entropy", ce_params(), ce3d_inputs, ce)


def nll_inputs():
    target = torch.randint(0, 5, (8,), dtype=torch.int64)
    target[5] = -100
    return [torch.log_softmax(randn(8, 5) * 2, dim=-1), target]


case("nll_loss", "nll_loss", {"ignore_index": -100, "reduction": "mean"}, nll_inputs,
     lambda x, p: F.nll_loss(x[0], x[1], ignore_index=p["ignore_index"], reduction=p["reduction"]))
case("mse_loss", "mse_loss", {"reduction": "mean"}, lambda: [randn(4, 6), randn(4, 6)],
     lambda x, p: F.mse_loss(x[0], x[1], reduction=p["reduction"]))

# ---- joining and indexing ----
case("cat", "cat", {"dim": 1}, lambda: [randn(2, 3, 4), randn(2, 1, 4), randn(2, 5, 4)],
     lambda x, p: torch.cat(x, dim=p["dim"]))
case("stack", "stack", {"dim": 0}, lambda: [randn(3, 4), randn(3, 4), randn(3, 4)],
     lambda x, p: torch.stack(x, dim=p["dim"]))
case("index_select", "index_select", {"dim": 1},
     lambda: [randn(4, 6), torch.tensor([5, 0, 2, 2, 4], dtype=torch.int64)],
     lambda x, p: torch.index_select(x[0], p["dim"], x[1]))
case("gather", "gather", {"dim": 1},
     lambda: [randn(4, 6), torch.randint(0, 6, (4, 3), dtype=torch.int64)],
     lambda x, p: torch.gather(x[0], p["dim"], x[1]))
case("one_hot", "one_hot", {"num_classes": 7},
     lambda: [torch.randint(0, 7, (3, 4), dtype=torch.int64)],
     lambda x, p: F.one_hot(x[0], num_classes=p["num_classes"]))
case("index_add", "index_add", {"dim": 0},
     lambda: [randn(5, 4), torch.tensor([4, 0, 2, 0, 1, 4], dtype=torch.int64), randn(6, 4)],
     lambda x, p: torch.index_add(x[0], p["dim"], x[1], x[2]))
case("scatter_add", "scatter_add", {"dim": 1},
     lambda: [randn(4, 5), torch.randint(0, 5, (4, 3), dtype=torch.int64), randn(4, 3)],
     lambda x, p: torch.scatter_add(x[0], p["dim"], x[1], x[2]))

# ---- views (the output is a view; gradients flow back through it) ----
case("transpose_contiguous", "transpose_contiguous", {"dim0": 0, "dim1": 1},
     lambda: [randn(4, 6), randn(6, 4)],
     lambda x, p: x[0].transpose(p["dim0"], p["dim1"]).contiguous() * x[1])
case("permute", "permute", {"dims": [2, 0, 1]}, lambda: [randn(2, 3, 4)],
     lambda x, p: x[0].permute(*p["dims"]))
case("slice", "slice", {"dim": 1, "start": 1, "end": 5, "step": 2}, lambda: [randn(3, 8)],
     lambda x, p: x[0][:, p["start"]:p["end"]:p["step"]])
case("select", "select", {"dim": 1, "index": 2}, lambda: [randn(3, 4, 5)],
     lambda x, p: x[0].select(p["dim"], p["index"]))
case("expand", "expand", {"sizes": [2, 3, 5, 4]}, lambda: [randn(3, 1, 4)],
     lambda x, p: x[0].expand(*p["sizes"]))
case("narrow", "narrow", {"dim": 1, "start": 2, "length": 3}, lambda: [randn(4, 6)],
     lambda x, p: x[0].narrow(p["dim"], p["start"], p["length"]))
case("unsqueeze_squeeze", "unsqueeze_squeeze", {"squeeze_dim": 1, "unsqueeze_dim": 0},
     lambda: [randn(3, 1, 4)],
     lambda x, p: x[0].squeeze(p["squeeze_dim"]).unsqueeze(p["unsqueeze_dim"]))

# ---- conversion ----
case("to_dtype", "to_dtype", {"dtype": "float64"}, lambda: [randn(3, 4)],
     lambda x, p: x[0].to(getattr(torch, p["dtype"])))


# ---- driver ----

SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.bfloat16: "BF16",
                      torch.float16: "F16", torch.int64: "I64", torch.int32: "I32",
                      torch.bool: "BOOL"}


def save_safetensors(path, tensors, metadata):
    """Writes the safetensors format deterministically: sorted JSON header padded with spaces
    to a multiple of 8, data ordered by element size (largest first) then name, so every
    tensor starts aligned to its element size."""
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
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def run_case(c, inputs, float_dtype):
    """Runs c on inputs (float ones cast to float_dtype); returns output, extras, grad_output, grads."""
    xs = []
    for t in inputs:
        t = t.clone()
        if t.is_floating_point():
            t = t.to(float_dtype).requires_grad_(True)
        xs.append(t)
    result = c.fn(xs, c.params)
    output, extras = result if isinstance(result, tuple) else (result, {})
    return xs, output, extras


def compute(c, inputs, float_dtype, grad_output=None):
    xs, output, extras = run_case(c, inputs, float_dtype)
    grads = {}
    if output.requires_grad:
        if grad_output is None:
            grad_output = torch.randn(output.shape, dtype=torch.float32).to(output.dtype)
        diff = [i for i, t in enumerate(xs) if t.requires_grad]
        gs = torch.autograd.grad(output, [xs[i] for i in diff], grad_output, allow_unused=True)
        grads = {i: g for i, g in zip(diff, gs) if g is not None}
    else:
        grad_output = None
    return [t.detach() for t in xs], output.detach(), extras, grad_output, grads


def tolerance(op, dtype):
    if dtype == torch.bfloat16:
        return TOL_BF16
    return TOL_F32_GEMM if op in GEMM_OPS else TOL_F32


def tol_ratio(actual, expected, rtol, atol):
    """max |a - e| / (atol + rtol |e|), computed in float64."""
    if not expected.is_floating_point():
        return 0.0 if torch.equal(actual.to(expected.dtype), expected) else math.inf
    a, e = actual.double(), expected.double()
    return ((a - e).abs() / (atol + rtol * e.abs())).max().item() if e.numel() else 0.0


def write_case(c, bf16, self_check):
    name = c.name + ("_bf16" if bf16 else "")
    torch.manual_seed(zlib.crc32(c.name.encode()))
    inputs = c.make_inputs()
    float_dtype = torch.bfloat16 if bf16 else torch.float32
    xs, output, extras, grad_output, grads = compute(c, inputs, float_dtype)
    note = None
    if bf16 and c.fp32_grads:
        _, _, _, _, grads32 = compute(c, xs, torch.float32, grad_output.float())
        for i in c.fp32_grads:
            grads[i] = grads32[i].to(torch.bfloat16)
        note = (", ".join(f"grad.{i}" for i in c.fp32_grads) + ": computed in float32 from the "
                "bf16 inputs and rounded once (PyTorch's CPU bf16 kernel accumulates them in bf16)")

    tensors = {f"input.{i}": t for i, t in enumerate(xs)}
    tensors["output"] = output
    tensors.update(extras)
    if grad_output is not None:
        tensors["grad_output"] = grad_output
    for i, g in grads.items():
        tensors[f"grad.{i}"] = g
    tensors = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    for k, v in tensors.items():
        assert v.numel() < 5000, f"{name}: {k} has {v.numel()} elements"
    metadata = {"op": c.op, "params": json.dumps(c.params, sort_keys=True),
                "dtype": "bfloat16" if bf16 else "float32"}
    if note:
        metadata["note"] = note
    path = os.path.join(OUT_DIR, name + ".safetensors")
    save_safetensors(path, tensors, metadata)

    if self_check:
        # Reference: the same stored inputs in higher precision, same grad_output.
        ref_dtype = torch.float32 if bf16 else torch.float64
        ref_go = None if grad_output is None else grad_output.to(
            torch.float64 if output.dtype == torch.float64 else ref_dtype)
        _, ref_out, ref_extras, _, ref_grads = compute(c, xs, ref_dtype, ref_go)
        rtol, atol = tolerance(c.op, float_dtype)
        worst = [("output", tol_ratio(output, ref_out, rtol, atol))]
        worst += [(k, tol_ratio(v, ref_extras[k], rtol, atol)) for k, v in extras.items()]
        worst += [(f"grad.{i}", tol_ratio(g, ref_grads[i], rtol, atol)) for i, g in grads.items()]
        tname, ratio = max(worst, key=lambda kv: kv[1])
        flag = "  <-- over half the tolerance" if ratio > 0.5 else ""
        print(f"  {name:28s} worst {tname:12s} uses {ratio:6.3f} of tolerance{flag}")
    return name, path


def main():
    parser = argparse.ArgumentParser(description="Writes tests/golden/ops/*.safetensors.")
    parser.add_argument("--self-check", action="store_true",
                        help="compare against a higher-precision recomputation")
    args = parser.parse_args()

    torch.set_num_threads(1)  # reproducible summation order
    os.makedirs(OUT_DIR, exist_ok=True)
    expected = set()
    for c in CASES:
        for bf16 in ([False, True] if c.bf16 else [False]):
            name, _ = write_case(c, bf16, args.self_check)
            expected.add(name + ".safetensors")
    # Drop files of cases that no longer exist, so the directory mirrors this script.
    for f in os.listdir(OUT_DIR):
        if f.endswith(".safetensors") and f not in expected:
            os.remove(os.path.join(OUT_DIR, f))
    total = sum(os.path.getsize(os.path.join(OUT_DIR, f)) for f in expected)
    print(f"wrote {len(expected)} cases to {OUT_DIR} ({total / 1024:.0f} KiB), torch {torch.__version__}")


if __name__ == "__main__":
    sys.exit(main())
