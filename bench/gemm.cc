// bench_gemm: GEMM throughput of accel::linear / accel::matmul next to oneDNN's matmul
// primitive called directly (created once, executed repeatedly on preallocated buffers), at
// the GEMM shapes of a BERT-base and a MiniLM training step, in float32 and bfloat16 on the
// CPU. It is a benchmark, not a test: the only check is that accel and oneDNN agree on each
// product. The PyTorch numbers come from gemm_torch.py; bench/gemm.sh runs both and merges them.
//
// Usage: bench_gemm [--threads N] [--quick]
// Prints a table, then one JSON line per row (lines starting with '{') for gemm.sh.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <dnnl.hpp>

#include "core/ops.h"
#include "core/parallel.h"

namespace {

using accel::DType;
using accel::Tensor;

// batch x (m x k) @ (k x n). An operand marked transposed is stored as its transpose
// (k x m or n x k, contiguous) and enters as a strided view, as it does in the model.
struct Case {
  std::string name;
  int64_t batch, m, k, n;
  bool a_transposed, b_transposed;
  bool linear;  // x @ W^T + bias through accel::linear (b_transposed, bias fused)
};

// The GEMMs of one encoder layer's forward and backward pass.
std::vector<Case> model_cases(const std::string& model, int64_t batch, int64_t seq, int64_t hidden,
                              int64_t intermediate, int64_t heads) {
  const int64_t tokens = batch * seq, head_dim = hidden / heads;
  struct Layer {
    const char* name;
    int64_t in, out;
  };
  std::vector<Case> cases;
  // qkv_fused: the query, key and value projections as one GEMM on their concatenated weights.
  for (Layer layer : {Layer{"qkv_out_proj", hidden, hidden}, Layer{"qkv_fused", hidden, 3 * hidden},
                      Layer{"ffn_up", hidden, intermediate}, Layer{"ffn_down", intermediate, hidden}}) {
    std::string prefix = model + "/" + layer.name;
    cases.push_back({prefix + "/fwd", 1, tokens, layer.in, layer.out, false, true, true});       // X @ W^T + b
    cases.push_back({prefix + "/grad_x", 1, tokens, layer.out, layer.in, false, false, false});  // dY @ W
    cases.push_back({prefix + "/grad_w", 1, layer.out, tokens, layer.in, true, false, false});   // dY^T @ X
  }
  cases.push_back({model + "/attn_scores", batch * heads, seq, head_dim, seq, false, true, false});   // Q @ K^T
  cases.push_back({model + "/attn_context", batch * heads, seq, seq, head_dim, false, false, false});  // P @ V
  return cases;
}

std::vector<Case> all_cases() {
  std::vector<Case> cases = model_cases("bert-base", 8, 128, 768, 3072, 12);
  std::vector<Case> minilm = model_cases("minilm", 32, 128, 384, 1536, 12);
  cases.insert(cases.end(), minilm.begin(), minilm.end());
  return cases;
}

// Stored operand shapes, written as in PyTorch code: "1024x768 @ (3072x768)^T".
std::string shape_string(const Case& c) {
  auto operand = [](int64_t rows, int64_t cols, bool transposed) {
    std::string stored = std::to_string(transposed ? cols : rows) + "x" + std::to_string(transposed ? rows : cols);
    return transposed ? "(" + stored + ")^T" : stored;
  };
  std::string s = c.batch > 1 ? std::to_string(c.batch) + "x " : "";
  s += operand(c.m, c.k, c.a_transposed) + " @ " + operand(c.k, c.n, c.b_transposed);
  return c.linear ? s + " + b" : s;
}

struct Operands {
  Tensor a, b, bias;  // as stored (a transposed operand holds its transpose)
};

Operands make_operands(const Case& c, DType dtype) {
  auto stored = [&](int64_t rows, int64_t cols, bool transposed) {
    accel::Shape shape = transposed ? accel::Shape{cols, rows} : accel::Shape{rows, cols};
    if (c.batch > 1) shape.insert(shape.begin(), c.batch);
    return accel::randn(shape).to(dtype);
  };
  Operands ops{stored(c.m, c.k, c.a_transposed), stored(c.k, c.n, c.b_transposed), Tensor()};
  if (c.linear) ops.bias = accel::randn({c.n}).to(dtype);
  return ops;
}

Tensor run_accel(const Case& c, const Operands& ops) {
  if (c.linear) return accel::linear(ops.a, ops.b, ops.bias);
  Tensor a = c.a_transposed ? ops.a.transpose(-2, -1) : ops.a;
  Tensor b = c.b_transposed ? ops.b.transpose(-2, -1) : ops.b;
  return accel::matmul(a, b);
}

// The same product as one oneDNN matmul primitive over the operands' buffers.
struct OnednnGemm {
  dnnl::matmul primitive;
  std::unordered_map<int, dnnl::memory> args;
  std::string impl;
};

// nullopt when oneDNN has no implementation at all (bf16 on CPUs without AVX512).
std::optional<OnednnGemm> make_onednn(const Case& c, const Operands& ops, const Tensor& out,
                                      const dnnl::engine& engine) {
  using dnnl::memory;
  const int64_t B = c.batch, M = c.m, K = c.k, N = c.n;
  memory::data_type dt = ops.a.dtype() == accel::kBFloat16 ? memory::data_type::bf16 : memory::data_type::f32;
  memory::desc a_md({B, M, K}, dt, c.a_transposed ? memory::dims{M * K, 1, M} : memory::dims{M * K, K, 1});
  memory::desc b_md({B, K, N}, dt, c.b_transposed ? memory::dims{K * N, 1, K} : memory::dims{K * N, N, 1});
  memory::desc c_md({B, M, N}, dt, memory::dims{M * N, N, 1});
  memory::desc bias_md({1, 1, N}, dt, memory::dims{N, N, 1});
  dnnl::matmul::desc desc = c.linear ? dnnl::matmul::desc(a_md, b_md, bias_md, c_md)
                                     : dnnl::matmul::desc(a_md, b_md, c_md);
  dnnl::matmul::primitive_desc pd;
  try {
    pd = dnnl::matmul::primitive_desc(desc, engine);
  } catch (const dnnl::error&) {
    return std::nullopt;
  }
  OnednnGemm gemm{dnnl::matmul(pd), {}, pd.impl_info_str()};
  gemm.args = {{DNNL_ARG_SRC, memory(a_md, engine, ops.a.data_ptr())},
               {DNNL_ARG_WEIGHTS, memory(b_md, engine, ops.b.data_ptr())},
               {DNNL_ARG_DST, memory(c_md, engine, out.data_ptr())}};
  if (c.linear) gemm.args.emplace(DNNL_ARG_BIAS, memory(bias_md, engine, ops.bias.data_ptr()));
  return gemm;
}

// Median wall time in milliseconds of up to `reps` calls, after up to `warmup` untimed ones.
// Slow calls cut both short: warm-up stops after 1 s, timing after 3 calls once 2 s have passed.
double median_ms(int warmup, int reps, const std::function<void()>& fn) {
  using Clock = std::chrono::steady_clock;
  auto seconds_since = [](Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); };
  auto start = Clock::now();
  for (int i = 0; i < warmup && (i == 0 || seconds_since(start) < 1.0); ++i) fn();
  std::vector<double> times;
  start = Clock::now();
  while (static_cast<int>(times.size()) < reps && (times.size() < 3 || seconds_since(start) < 2.0)) {
    auto call_start = Clock::now();
    fn();
    times.push_back(seconds_since(call_start) * 1e3);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

double gflops(const Case& c, double ms) { return 2.0 * c.batch * c.m * c.n * c.k / (ms * 1e6); }

const char* short_name(DType dtype) { return dtype == accel::kBFloat16 ? "bf16" : "f32"; }

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
      accel::set_num_threads(std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: %s [--threads N] [--quick]\n", argv[0]);
      return 2;
    }
  }
  const int warmup = quick ? 1 : 3, reps = quick ? 3 : 10;
  const int threads = accel::get_num_threads();
  const dnnl::version_t* version = dnnl::version();
  std::printf("bench_gemm: threads %d (omp_get_max_threads), oneDNN %d.%d.%d, "
              "median of up to %d runs after up to %d warm-up\n",
              threads, version->major, version->minor, version->patch, reps, warmup);
  std::printf("ratio = accel GFLOP/s / oneDNN GFLOP/s (1.00 = parity, below 1 = accel slower)\n\n");
  std::printf("%-30s %-32s %-5s %9s %8s %9s %8s %6s  %s\n", "case", "shape", "dtype", "accel ms", "GFLOP/s",
              "oneDNN ms", "GFLOP/s", "ratio", "oneDNN impl");

  dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  std::vector<std::string> json_lines;
  for (DType dtype : {accel::kFloat32, accel::kBFloat16}) {
    for (const Case& c : all_cases()) {
      Operands ops = make_operands(c, dtype);
      double accel_ms = median_ms(warmup, reps, [&] { run_accel(c, ops); });

      Tensor out = Tensor::empty({c.batch, c.m, c.n}, dtype);
      std::optional<OnednnGemm> gemm = make_onednn(c, ops, out, engine);
      std::string impl = gemm ? gemm->impl : "none";
      // oneDNN's reference kernels are not a baseline worth timing.
      std::optional<double> onednn_ms;
      if (gemm && impl.find("ref") == std::string::npos) {
        onednn_ms = median_ms(warmup, reps, [&] {
          gemm->primitive.execute(stream, gemm->args);
          stream.wait();
        });
        Tensor expected = run_accel(c, ops).reshape(out.sizes()).to(accel::kFloat32);
        bool f32 = dtype == accel::kFloat32;
        if (!accel::allclose(out.to(accel::kFloat32), expected, f32 ? 1e-3 : 2e-2, f32 ? 1e-2 : 0.5)) {
          std::fprintf(stderr, "warning: %s %s: accel and oneDNN results differ\n", c.name.c_str(), short_name(dtype));
        }
      }

      std::string shape = shape_string(c);
      std::printf("%-30s %-32s %-5s %9.3f %8.1f ", c.name.c_str(), shape.c_str(), short_name(dtype), accel_ms,
                  gflops(c, accel_ms));
      if (onednn_ms) {
        std::printf("%9.3f %8.1f %6.2f  %s\n", *onednn_ms, gflops(c, *onednn_ms), *onednn_ms / accel_ms,
                    impl.c_str());
      } else {
        std::printf("%9s %8s %6s  %s (not timed)\n", "-", "-", "-", impl.c_str());
      }
      std::fflush(stdout);

      char json[512];
      std::snprintf(json, sizeof json,
                    R"({"case": "%s", "shape": "%s", "dtype": "%s", "threads": %d, "flop": %.0f, )"
                    R"("accel_ms": %.4f, "onednn_ms": %s, "onednn_impl": "%s"})",
                    c.name.c_str(), shape.c_str(), short_name(dtype), threads, 2.0 * c.batch * c.m * c.n * c.k,
                    accel_ms, onednn_ms ? std::to_string(*onednn_ms).c_str() : "null", impl.c_str());
      json_lines.push_back(json);
    }
  }
  std::printf("\n");
  for (const std::string& line : json_lines) std::printf("%s\n", line.c_str());
  return 0;
}
