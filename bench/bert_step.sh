#!/usr/bin/env bash
# The BERT step benchmark, end to end: for each configuration (model x dtype x mode) it runs
# accel's bench_bert_step and PyTorch's bert_step_torch.py alternately, with the same shapes,
# random-token inputs and thread count, takes each side's best median over the rounds, and
# ends with one JSON line per configuration:
#   {"model":..,"dtype":..,"mode":"train"|"infer","accel_ms":..,"torch_ms":..,"ratio":..,
#    "accel_peak_mb":..,"torch_peak_mb":..,"gemm_share":..}
# ratio = accel_ms / torch_ms (below 1: accel is faster). gemm_share: accel's GEMM throughput
# inside the step (its analytic GEMM FLOPs over the time ACCEL_PROFILE measures in the matmul
# and linear_gelu kernels; the fused attention's own small GEMMs are left out of both) as a
# share of this machine's oneDNN GEMM ceiling in the step's dtype (the best GFLOP/s raw
# oneDNN reaches on the step's GEMM shapes in that dtype in bench_gemm: bf16 has its own, which
# on AMX is several times the fp32 one). PyTorch runs at its best: its build configuration is
# printed, OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE are unset for its command alone.
#
# Usage: bench/bert_step.sh [--quick] [--threads N] [--rounds R] [--model M] [--dtype D]
#   --quick: MiniLM fp32 train and infer only, 2 timed steps, 1 round
#   --model bert-base|minilm, --dtype f32|bf16: only those configurations (PyTorch's bf16
#   GEMMs on a CPU without bf16 units are a slow fallback, so its bf16 runs take long)
# Environment: BUILD_DIR (default build-bench). Raw output is kept in $BUILD_DIR/bench_bert_step_logs.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build-bench}
threads=$(nproc)
quick=""
rounds=""
only_model=""
only_dtype=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) quick=1 ;;
    --threads) threads=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --model) only_model=$2; shift ;;
    --dtype) only_dtype=$2; shift ;;
    *) echo "usage: $0 [--quick] [--threads N] [--rounds R] [--model bert-base|minilm] [--dtype f32|bf16]" >&2; exit 2 ;;
  esac
  shift
done
rounds=${rounds:-$([[ -n $quick ]] && echo 1 || echo 2)}
steps=$([[ -n $quick ]] && echo 2 || echo 5)

if [[ -n $quick ]]; then
  configs=("minilm f32 train" "minilm f32 infer")
else
  configs=()
  for model in bert-base minilm; do
    [[ -n $only_model && $model != "$only_model" ]] && continue
    for dtype in f32 bf16; do
      [[ -n $only_dtype && $dtype != "$only_dtype" ]] && continue
      for mode in train infer; do configs+=("$model $dtype $mode"); done
    done
  done
  if [[ ${#configs[@]} -eq 0 ]]; then
    echo "$0: no configuration matches --model '$only_model' --dtype '$only_dtype' (expected bert-base|minilm, f32|bf16)" >&2
    exit 2
  fi
fi

if [[ ! -f $build/build.ninja ]]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DACCEL_CUDA=OFF -DACCEL_BUILD_TESTS=OFF
fi
cmake --build "$build" -j"$(nproc)" --target bench_bert_step bench_gemm

logs=$build/bench_bert_step_logs
rm -rf "$logs"
mkdir -p "$logs"
torch_env=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $threads threads"
"${torch_env[@]}" python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', \
transformers.__version__); print(torch.__config__.show())" | tee "$logs/torch_config.txt"

for config in "${configs[@]}"; do
  read -r model dtype mode <<<"$config"
  args=(--model "$model" --dtype "$dtype" --mode "$mode" --threads "$threads" --steps "$steps")
  tag="${model}_${dtype}_${mode}"
  for ((round = 1; round <= rounds; ++round)); do
    echo "== $config, round $round/$rounds"
    "$build/bin/bench_bert_step" "${args[@]}" | tee "$logs/accel_${tag}_$round.log"
    "${torch_env[@]}" python3 "$root/bench/bert_step_torch.py" "${args[@]}" | tee "$logs/torch_${tag}_$round.log"
  done
  # Where accel's step time goes: the per-kernel table, for the matmul kernel's share.
  ACCEL_PROFILE=1 "$build/bin/bench_bert_step" "${args[@]}" --warmup 1 >"$logs/profile_${tag}.log" 2>&1
done

# The machine's oneDNN GEMM ceiling at each model's step shapes.
"$build/bin/bench_gemm" --threads "$threads" --quick >"$logs/gemm.log" 2>&1 || true

python3 - "$logs" "$steps" "${configs[@]}" <<'PY'
import glob, json, os, re, sys

logs, steps, configs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
shapes = {"bert-base": dict(B=8, T=128, H=768, I=3072, L=12), "minilm": dict(B=32, T=128, H=384, I=1536, L=6)}

def last_json(path):
    with open(path) as f:
        lines = [l for l in f if l.startswith("{")]
    return json.loads(lines[-1])

def gemm_flops(s, mode, attention):
    """GEMM FLOPs of one step: per layer Q, K, V, output, two FFN projections, and QK^T and PV
    when `attention` (the fused attention kernel does those inside its own time); the pooler;
    backward computes two products per forward product (inputs and weights). The last layer
    computes position 0 alone (BertModel::pooled_output): K and V from all B * T rows, the
    rest on B rows."""
    B, T, H, I = s["B"], s["T"], s["H"], s["I"]
    def layer(rows, query_rows):  # query_rows: the rows past the attention
        flops = 2 * rows * H * H * 2 + 2 * query_rows * H * H * 2 + 2 * query_rows * H * I * 2
        if attention:
            flops += 2 * 2 * query_rows * T * H
        return flops
    forward = (s["L"] - 1) * layer(B * T, B * T) + layer(B * T, B) + 2 * B * H * H
    return forward * (3 if mode == "train" else 1)

def kernel_ms_per_step(path):
    """{kernel: ms per step} from the ACCEL_PROFILE table, which bench_bert_step resets after its
    warmup, so every call in it belongs to a timed step."""
    table = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"K (\w+)\s+\d+\s+([\d.]+)", line)
            if m:
                table[m.group(1)] = float(m.group(2)) / steps
    return table

def ceiling_gflops(model, dtype):
    """The best GFLOP/s raw oneDNN reached on this model's step GEMMs in `dtype` (bench_gemm's
    JSON lines): the machine's GEMM ceiling at these shapes. Without native bf16 units the
    bf16 ceiling is that of oneDNN's fallback, which accel does not take (it multiplies in
    fp32), so a bf16 share above 1 there says so rather than a fault."""
    best = None
    for line in open(os.path.join(logs, "gemm.log")):
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        if r["case"].startswith(model + "/") and r["dtype"] == dtype and r["onednn_ms"]:
            best = max(best or 0.0, r["flop"] / (r["onednn_ms"] * 1e6))
    return best

for config in configs:
    model, dtype, mode = config.split()
    tag = f"{model}_{dtype}_{mode}"
    accel = [last_json(p) for p in sorted(glob.glob(os.path.join(logs, f"accel_{tag}_*.log")))]
    torch = [last_json(p) for p in sorted(glob.glob(os.path.join(logs, f"torch_{tag}_*.log")))]
    a, t = min(accel, key=lambda r: r["ms"]), min(torch, key=lambda r: r["ms"])
    share = None
    kernels, ceiling = kernel_ms_per_step(os.path.join(logs, f"profile_{tag}.log")), ceiling_gflops(model, dtype)
    gemm_ms = kernels.get("matmul", 0.0) + kernels.get("linear_gelu", 0.0)  # the GEMM kernels
    if gemm_ms and ceiling:
        flops = gemm_flops(shapes[model], mode, attention="attention" not in kernels)
        share = round(flops / (gemm_ms * 1e6) / ceiling, 3)
    print(json.dumps({"model": model, "dtype": dtype, "mode": mode, "accel_ms": a["ms"], "torch_ms": t["ms"],
                      "ratio": round(a["ms"] / t["ms"], 3), "accel_peak_mb": a["peak_mb"],
                      "torch_peak_mb": t["peak_mb"], "gemm_share": share}))
PY
