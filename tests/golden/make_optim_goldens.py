#!/usr/bin/env python3
"""Golden trajectories of torch.optim and transformers' LR schedules for tests/nn/test_optim.cc.

For each optimizer case: two parameters (one 2-D, one 1-D) start from fixed values and take
8 steps with fixed pre-drawn gradients (stored, so the C++ test feeds the same ones); the
parameters after every step are stored. Also: the LR factors of the three schedules over 30
steps, and clip_grad_norm_ (2-norm and inf-norm) on fixed gradients.

    python3 tests/golden/make_optim_goldens.py   # writes tests/golden/optim/optim.safetensors
"""
import json
import os

import torch
from safetensors.torch import save_file
from transformers import (get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup,
                          get_linear_schedule_with_warmup)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "optim", "optim.safetensors")
STEPS = 8

CASES = {
    "sgd_plain": lambda p: torch.optim.SGD(p, lr=0.1),
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01),
    "sgd_nesterov": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.02),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.05),
    "adamw_default": lambda p: torch.optim.AdamW(p, lr=0.003),
}


def main():
    torch.manual_seed(0)
    tensors = {}
    w0, b0 = torch.randn(3, 4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    grads = [(torch.randn(3, 4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)) for _ in range(STEPS)]
    tensors["w0"], tensors["b0"] = w0, b0
    for i, (gw, gb) in enumerate(grads):
        tensors[f"grad_w.{i}"], tensors[f"grad_b.{i}"] = gw, gb
    for name, make in CASES.items():
        w, b = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(b0.clone())
        opt = make([w, b])
        for i, (gw, gb) in enumerate(grads):
            w.grad, b.grad = gw.clone(), gb.clone()
            opt.step()
            tensors[f"{name}.w.{i}"] = w.detach().clone()
            tensors[f"{name}.b.{i}"] = b.detach().clone()
    for name, make in [("linear", lambda o: get_linear_schedule_with_warmup(o, 5, 25)),
                       ("cosine", lambda o: get_cosine_schedule_with_warmup(o, 5, 25)),
                       ("constant", lambda o: get_constant_schedule_with_warmup(o, 5))]:
        o = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        s = make(o)
        factors = []
        for _ in range(30):
            factors.append(o.param_groups[0]["lr"])
            o.step()
            s.step()
        tensors[f"schedule.{name}"] = torch.tensor(factors, dtype=torch.float64)
    for norm in (2.0, float("inf")):
        w = torch.nn.Parameter(torch.zeros(3, 4, dtype=torch.float64))
        b = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
        w.grad, b.grad = grads[0][0].clone() * 3, grads[0][1].clone() * 3
        total = torch.nn.utils.clip_grad_norm_([w, b], 1.5, norm_type=norm)
        key = "clip.l2" if norm == 2.0 else "clip.inf"
        tensors[f"{key}.total"] = total.reshape(1).to(torch.float64)
        tensors[f"{key}.w"], tensors[f"{key}.b"] = w.grad.clone(), b.grad.clone()
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, OUT,
              metadata={"torch": torch.__version__, "steps": json.dumps(STEPS)})
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
