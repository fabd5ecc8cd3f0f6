"""PyTorch side of the GEMM benchmark: times torch.nn.functional.linear / torch.matmul on the
shapes of bench/gemm.cc (BERT-base and MiniLM training-step GEMMs, float32 and bfloat16) with
the same thread count, and prints the same JSON lines (key "torch_ms") for bench/gemm.sh to
merge. It is a benchmark, not a test, and it checks no results. The case list mirrors
model_cases() in gemm.cc; gemm.sh reports any case that one side has and the other lacks.

Usage: python3 gemm_torch.py [--threads N] [--quick]
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F


def model_cases(model, batch, seq, hidden, intermediate, heads):
    """(name, batch, m, k, n, a_transposed, b_transposed, linear), as in gemm.cc."""
    tokens, head_dim = batch * seq, hidden // heads
    cases = []
    for layer, fan_in, fan_out in [("qkv_out_proj", hidden, hidden), ("ffn_up", hidden, intermediate),
                                   ("ffn_down", intermediate, hidden)]:
        prefix = f"{model}/{layer}"
        cases.append((f"{prefix}/fwd", 1, tokens, fan_in, fan_out, False, True, True))       # X @ W^T + b
        cases.append((f"{prefix}/grad_x", 1, tokens, fan_out, fan_in, False, False, False))  # dY @ W
        cases.append((f"{prefix}/grad_w", 1, fan_out, tokens, fan_in, True, False, False))   # dY^T @ X
    cases.append((f"{model}/attn_scores", batch * heads, seq, head_dim, seq, False, True, False))   # Q @ K^T
    cases.append((f"{model}/attn_context", batch * heads, seq, seq, head_dim, False, False, False))  # P @ V
    return cases


CASES = model_cases("bert-base", 8, 128, 768, 3072, 12) + model_cases("minilm", 32, 128, 384, 1536, 12)


def make_call(case, dtype):
    """A closure computing the case's product on fresh random operands."""
    _, batch, m, k, n, a_transposed, b_transposed, linear = case

    def stored(rows, cols, transposed):
        shape = (cols, rows) if transposed else (rows, cols)
        return torch.randn(((batch,) if batch > 1 else ()) + shape).to(dtype)

    a, b = stored(m, k, a_transposed), stored(k, n, b_transposed)
    if linear:
        bias = torch.randn(n).to(dtype)
        return lambda: F.linear(a, b, bias)
    a = a.transpose(-2, -1) if a_transposed else a
    b = b.transpose(-2, -1) if b_transposed else b
    return lambda: torch.matmul(a, b)


def median_ms(warmup, reps, fn):
    """Median wall time in ms of up to `reps` calls after up to `warmup` untimed ones; as in
    gemm.cc, warm-up stops after 1 s, timing after 3 calls once 2 s have passed."""
    start = time.perf_counter()
    for i in range(warmup):
        if i > 0 and time.perf_counter() - start >= 1.0:
            break
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < reps and (len(times) < 3 or time.perf_counter() - start < 2.0):
        call_start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - call_start) * 1e3)
    return sorted(times)[len(times) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warmup, reps = (1, 3) if args.quick else (3, 10)

    print(torch.__config__.show())
    print(f"gemm_torch: torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"median of up to {reps} runs after up to {warmup} warm-up\n")
    print(f"{'case':30} {'dtype':5} {'torch ms':>9} {'GFLOP/s':>8}")
    lines = []
    with torch.inference_mode():
        for dtype, dtype_name in [(torch.float32, "f32"), (torch.bfloat16, "bf16")]:
            for case in CASES:
                name, batch, m, k, n = case[:5]
                ms = median_ms(warmup, reps, make_call(case, dtype))
                flop = 2.0 * batch * m * n * k
                print(f"{name:30} {dtype_name:5} {ms:9.3f} {flop / (ms * 1e6):8.1f}", flush=True)
                lines.append(json.dumps({"case": name, "dtype": dtype_name, "threads": torch.get_num_threads(),
                                         "flop": flop, "torch_ms": round(ms, 4)}))
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
