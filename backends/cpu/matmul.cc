// CPU GEMM. float32 (and bfloat16 where the CPU has native bf16 units) run on oneDNN's
// matmul primitive with strides passed straight into the memory descriptors, so transposed
// operands are never copied; primitives are created once per shape and cached. In inference a
// weight multiplied twice unchanged is kept in oneDNN's blocked layout (packed_weight_cache.h).
// bfloat16 and float16 on CPUs without native units convert to float32, multiply with float32
// accumulation, and round once. float64 uses Eigen.
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include <Eigen/Core>
#include <dnnl.hpp>

#include "backends/cpu/packed_weight_cache.h"
#include "core/kernels.h"
#include "core/ops.h"

namespace accel::cpu {

namespace {

using dnnl::memory;

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

memory::data_type to_dnnl(DType dtype) {
  switch (dtype) {
    case kFloat32: return memory::data_type::f32;
    case kBFloat16: return memory::data_type::bf16;
    case kFloat16: return memory::data_type::f16;
    default: ACCEL_FAIL("matmul: dtype ", dtype_name(dtype), " has no oneDNN type");
  }
}

// (B, R, C) dims and strides for oneDNN; a broadcast batch becomes batch 1, and size-1 dims
// get the dense stride oneDNN expects.
struct MatrixLayout {
  memory::dims dims, strides;
};
MatrixLayout layout_of(const Tensor& t, int64_t batch) {
  int64_t b = t.stride(0) == 0 ? 1 : batch;
  int64_t rows = t.size(1), cols = t.size(2);
  int64_t s_row = t.stride(1), s_col = t.stride(2);
  if (cols == 1) s_col = 1;
  if (rows == 1) s_row = cols * s_col;
  int64_t s_batch = b == 1 ? std::max(rows * s_row, cols * s_col) : t.stride(0);
  if (b == 1 && rows * cols > 0) s_batch = std::max({s_batch, rows * s_row, cols * s_col});
  return {{b, rows, cols}, {s_batch, s_row, s_col}};
}

// C (dense) and the bias row for a product whose A has this rank: 3-D (B, M, N), or 2-D
// (B * M, N) when the batch was folded into A's rows.
memory::desc c_desc(size_t rank, int64_t B, int64_t M, int64_t N, memory::data_type dt) {
  return rank == 2 ? memory::desc({B * M, N}, dt, memory::dims{N, 1})
                   : memory::desc({B, M, N}, dt, memory::dims{M * N, N, 1});
}
memory::desc bias_desc(size_t rank, int64_t N, memory::data_type dt) {
  return rank == 2 ? memory::desc({1, N}, dt, memory::dims{N, 1}) : memory::desc({1, 1, N}, dt, memory::dims{N, N, 1});
}

// Primitives are shared by every thread, and oneDNN's own scratchpad (one per thread, common to
// all primitives) allows no such sharing: two threads running one primitive at once got wrong
// products. So each execution brings its own scratchpad (scratchpad_mode::user), which makes
// concurrent executions of one primitive safe.
struct CachedMatmul {
  dnnl::matmul primitive;
  bool is_reference;          // oneDNN's slow reference kernel: no native support for this dtype
  memory::desc weights_desc;  // B's layout: the plain one asked for, or oneDNN's blocked one
  memory::desc scratchpad_desc;
};

std::mutex cache_mutex;
std::unordered_map<std::string, CachedMatmul> cache;

std::string key_of(const MatrixLayout& a, const MatrixLayout& b, int64_t M, int64_t N, int64_t B,
                   DType dtype, bool bias, bool accumulate, bool gelu, bool packed_b) {
  std::string key;
  for (auto v : {a.dims, a.strides, b.dims, b.strides}) {
    for (auto x : v) key += std::to_string(x) + ',';
    key += '|';
  }
  key += std::to_string(M) + ',' + std::to_string(N) + ',' + std::to_string(B) + ',' +
         std::to_string(int(dtype)) + (bias ? "b" : "") + (accumulate ? "a" : "") + (gelu ? "g" : "") +
         (packed_b ? "p" : "");
  return key;
}

// packed_b: B in whatever blocked layout oneDNN prefers (format "any"), for packed weights.
const CachedMatmul* get_primitive(const MatrixLayout& a, const MatrixLayout& b, int64_t B, int64_t M,
                                  int64_t N, DType dtype, bool bias, bool accumulate, bool gelu, bool packed_b) {
  std::string key = key_of(a, b, M, N, B, dtype, bias, accumulate, gelu, packed_b);
  std::lock_guard<std::mutex> lock(cache_mutex);
  auto it = cache.find(key);
  if (it != cache.end()) return &it->second;
  memory::data_type dt = to_dnnl(dtype);
  memory::desc a_md(a.dims, dt, a.strides);
  memory::desc b_md =
      packed_b ? memory::desc(b.dims, dt, memory::format_tag::any) : memory::desc(b.dims, dt, b.strides);
  memory::desc c_md = c_desc(a.dims.size(), B, M, N, dt);
  memory::desc bias_md = bias ? bias_desc(a.dims.size(), N, dt) : memory::desc();
  dnnl::primitive_attr attr;
  dnnl::post_ops ops;
  if (accumulate) ops.append_sum(1.0f);
  if (gelu) ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_gelu_erf, 0.0f, 0.0f);
  attr.set_post_ops(ops);
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  try {
    dnnl::matmul::desc desc = bias ? dnnl::matmul::desc(a_md, b_md, bias_md, c_md)
                                   : dnnl::matmul::desc(a_md, b_md, c_md);
    dnnl::matmul::primitive_desc pd(desc, attr, cpu_engine());
    bool is_ref = std::string(pd.impl_info_str()).find("ref") != std::string::npos;
    auto [inserted, ok] =
        cache.emplace(key, CachedMatmul{dnnl::matmul(pd), is_ref, pd.weights_desc(), pd.scratchpad_desc()});
    return &inserted->second;
  } catch (const dnnl::error&) {
    return nullptr;  // no oneDNN implementation for this layout/dtype
  }
}

void matmul_eigen_f64(const Tensor& a, const Tensor& b, const Tensor& bias, const Tensor& out, bool accumulate) {
  using Strided = Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>;
  using Matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const int64_t B = out.size(0), M = out.size(1), N = out.size(2), K = a.size(2);
  const double* pa = a.data_ptr<double>();
  const double* pb = b.data_ptr<double>();
  double* pc = out.data_ptr<double>();
  for (int64_t i = 0; i < B; ++i) {
    Eigen::Map<const Matrix, 0, Strided> A(pa + i * a.stride(0), M, K, Strided(a.stride(1), a.stride(2)));
    Eigen::Map<const Matrix, 0, Strided> Bm(pb + i * b.stride(0), K, N, Strided(b.stride(1), b.stride(2)));
    Eigen::Map<Matrix> C(pc + i * M * N, M, N);
    if (accumulate) C.noalias() += A * Bm;
    else C.noalias() = A * Bm;
    if (bias.defined()) {
      Eigen::Map<const Eigen::RowVectorXd> row(bias.data_ptr<double>(), N);
      C.rowwise() += row;
    }
  }
}

// A row-major float32 B (K x N) whose rows are a multiple of 1 KiB apart maps them into at
// most 4 of the L1 cache's 64 sets, and oneDNN's brgemm, which gathers B a few columns at a
// time across many rows, slows down: BERT-base's backward products dY @ W (W rows of 768, 2304
// or 3072 floats) ran at 370, 377 and 157 GFLOP/s against 410, 411 and 420 with the rows 64
// bytes further apart (Sapphire Rapids, 2 threads). Such a B is copied into padded rows first
// where M is large enough for the copy (K x N elements, streamed) to cost less than it saves
// (at M = 256 it did not). Not for bf16: on AMX its GEMMs are five times faster and the copy
// is not, so there it made ffn_down's grad_x 40% slower.
constexpr int64_t kAliasingStrideBytes = 1024, kMinRowsForPaddedCopy = 512;
Tensor with_padded_rows_if_aliasing(const Tensor& b, int64_t M) {
  const int64_t row_bytes = b.stride(1) * b.element_size();
  const bool aliasing = b.dtype() == kFloat32 && b.stride(2) == 1 && b.size(1) > 1 &&
                        row_bytes % kAliasingStrideBytes == 0;
  if (!aliasing || M < kMinRowsForPaddedCopy) return b;
  const int64_t pad = 64 / b.element_size();  // one cache line
  // A broadcast batch (stride 0: one matrix for every batch) is padded once and broadcast again.
  const bool broadcast = b.stride(0) == 0;
  const Tensor source = broadcast ? b.narrow(0, 0, 1) : b;
  Tensor padded = Tensor::empty({source.size(0), b.size(1), b.size(2) + pad}, b.dtype()).narrow(2, 0, b.size(2));
  padded.copy_(source);
  return broadcast ? padded.expand(b.sizes()) : padded;
}

void execute(const CachedMatmul& cached, const MatrixLayout& la, const Tensor& a, const dnnl::memory& b_mem,
             const Tensor& bias, const Tensor& out) {
  const int64_t B = out.size(0), M = out.size(1), N = out.size(2);
  memory::data_type dt = to_dnnl(out.dtype());
  dnnl::engine& engine = cpu_engine();
  const size_t rank = la.dims.size();
  memory a_mem({la.dims, dt, la.strides}, engine, a.data_ptr());
  memory c_mem(c_desc(rank, B, M, N, dt), engine, out.data_ptr());
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, c_mem}};
  if (bias.defined()) {
    args.emplace(DNNL_ARG_BIAS, memory(bias_desc(rank, N, dt), engine, bias.data_ptr()));
  }
  const size_t scratchpad_bytes = cached.scratchpad_desc.get_size();
  Tensor scratchpad;  // from the caching allocator: no fresh pages per call
  if (scratchpad_bytes > 0) {
    scratchpad = Tensor::empty({static_cast<int64_t>((scratchpad_bytes + 3) / 4)}, kFloat32);
    args.emplace(DNNL_ARG_SCRATCHPAD, memory(cached.scratchpad_desc, engine, scratchpad.data_ptr()));
  }
  dnnl::stream stream(engine);
  cached.primitive.execute(stream, args);
  stream.wait();
}

// A (B, M, K) as one (B * M, K) matrix, when its matrices lie one after another (not when
// they are one matrix broadcast over the batch).
std::optional<MatrixLayout> rows_of(const Tensor& a) {
  const int64_t B = a.size(0);
  const MatrixLayout l = layout_of(a, B);
  if (l.dims[0] != B || (B > 1 && l.strides[0] != l.dims[1] * l.strides[1])) return std::nullopt;
  return MatrixLayout{{B * l.dims[1], l.dims[2]}, {l.strides[1], l.strides[2]}};
}

// The product with B's packed copy, when B is one matrix used in inference and the cache
// holds (or now makes) its copy; false when B is to be multiplied as it is. oneDNN picks a
// blocked layout for B only in 2-D problems (3-D ones get the plain one), so A's batch is
// folded into its rows.
bool try_packed(const Tensor& a, const Tensor& b, const Tensor& bias, const Tensor& out, bool accumulate, bool gelu) {
  const int64_t B = out.size(0), M = out.size(1), N = out.size(2), K = a.size(2);
  std::optional<MatrixLayout> la = rows_of(a);
  if (!la) return false;
  const MatrixLayout lb = layout_of(b, 1);
  const MatrixLayout lb2{{K, N}, {lb.strides[1], lb.strides[2]}};
  const CachedMatmul* cached =
      get_primitive(*la, lb2, 1, B * M, N, out.dtype(), bias.defined(), accumulate, gelu, /*packed_b=*/true);
  if (cached == nullptr || cached->is_reference) return false;
  const memory::desc plain(lb2.dims, to_dnnl(out.dtype()), lb2.strides);
  std::optional<PackedWeight> packed = packed_weight(b, plain, cached->weights_desc, cpu_engine());
  if (!packed) return false;
  execute(*cached, *la, a, packed->memory, bias, out);
  return true;
}

bool try_onednn(const Tensor& a, const Tensor& b_in, const Tensor& bias, const Tensor& out, bool accumulate,
                GemmB b_use, bool allow_reference, bool gelu = false) {
  if (b_use == GemmB::InferenceWeight && may_pack(b_in)) {
    if (try_packed(a, b_in, bias, out, accumulate, gelu)) return true;
  } else if (b_use == GemmB::Transient) {
    forget_packed_weight(b_in);  // training again: it keeps no packed copies
  }
  const int64_t B = out.size(0), M = out.size(1), N = out.size(2);
  const Tensor b = with_padded_rows_if_aliasing(b_in, M);
  MatrixLayout la = layout_of(a, B), lb = layout_of(b, B);
  const CachedMatmul* cached = get_primitive(la, lb, B, M, N, out.dtype(), bias.defined(), accumulate, gelu, false);
  if (cached == nullptr || (cached->is_reference && !allow_reference)) return false;
  execute(*cached, la, a, memory(cached->weights_desc, cpu_engine(), b.data_ptr()), bias, out);
  return true;
}

void matmul_kernel(const Tensor& a, const Tensor& b, const Tensor& bias, const Tensor& out, bool accumulate,
                   GemmB b_use) {
  if (out.numel() == 0) return;
  Tensor result = out;  // a handle to write through
  if (a.size(2) == 0) {  // empty inner dimension: the product is zero (plus bias)
    if (!accumulate) result.zero_();
    if (bias.defined()) result.add_(bias);
    return;
  }
  switch (out.dtype()) {
    case kFloat64: return matmul_eigen_f64(a, b, bias, out, accumulate);
    case kFloat32:
      if (try_onednn(a, b, bias, out, accumulate, b_use, /*allow_reference=*/true)) return;
      // Layout oneDNN cannot take (e.g. batch strides it rejects): multiply dense copies.
      if (try_onednn(a.contiguous(), b.contiguous(), bias, out, accumulate, GemmB::Transient, true)) return;
      ACCEL_FAIL("matmul: oneDNN rejected float32 shapes ", a.shape_string(), " @ ", b.shape_string());
    case kBFloat16:
    case kFloat16: {
      if (try_onednn(a, b, bias, out, accumulate, b_use, /*allow_reference=*/false)) return;
      // No native 16-bit GEMM on this CPU: float32 GEMM (float32 accumulation), one rounding.
      Tensor out32 = accumulate ? out.to(kFloat32) : Tensor::empty(out.sizes(), kFloat32);
      Tensor bias32 = bias.defined() ? bias.to(kFloat32) : Tensor();
      matmul_kernel(a.to(kFloat32), b.to(kFloat32), bias32, out32, accumulate, GemmB::Transient);
      result.copy_(out32);
      return;
    }
    default:
      ACCEL_FAIL("matmul: no kernel for dtype ", dtype_name(out.dtype()), " on cpu (use a floating dtype)");
  }
}

// float32 and bfloat16 (the op falls back to linear then gelu otherwise); oneDNN's gelu_erf
// post-op, applied to the fp32 accumulator. bfloat16 without native units: the same on fp32
// copies of the operands, so the result is still rounded to bfloat16 once.
void linear_gelu_kernel(const Tensor& a, const Tensor& b, const Tensor& bias, const Tensor& out) {
  ACCEL_CHECK(out.dtype() == kFloat32 || out.dtype() == kBFloat16,
              "linear_gelu: the fused CPU kernel takes float32 or bfloat16, got ", dtype_name(out.dtype()));
  if (out.numel() == 0) return;
  if (a.size(2) > 0 &&
      try_onednn(a, b, bias, out, false, GemmB::InferenceWeight, /*allow_reference=*/false, /*gelu=*/true)) {
    return;
  }
  Tensor result = out;  // a handle to write through
  if (out.dtype() == kBFloat16) {
    Tensor out32 = Tensor::empty(out.sizes(), kFloat32);
    linear_gelu_kernel(a.to(kFloat32), b.to(kFloat32), bias.defined() ? bias.to(kFloat32) : Tensor(), out32);
    result.copy_(out32);
    return;
  }
  matmul_kernel(a, b, bias, out, false, GemmB::InferenceWeight);  // a layout oneDNN will not fuse: GEMM, then GELU
  result.copy_(gelu(out));
}

}  // namespace

ACCEL_REGISTER_KERNEL(matmul, DeviceType::CPU, matmul_kernel);
ACCEL_REGISTER_KERNEL(linear_gelu, DeviceType::CPU, linear_gelu_kernel);

}  // namespace accel::cpu
