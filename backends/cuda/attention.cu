// CUDA fused attention, forward and backward, float32: the kernels behind
// scaled_dot_product_attention on this device. Core hands them float32 only, as it does the
// CPU kernel (backends/cpu/attention.cc), whose outputs and dropout draw they reproduce (the
// saved probabilities are each backend's own: the CPU marks dropped ones by their sign bit,
// this backend stores P and redraws in backward). Per (batch, head), with
// P = softmax(scale * q k^T + mask), Pd = dropout(P):
//   forward:  S = q k^T (cuBLAS) into probs; one row kernel turns each row of S into P, in
//             float, and under dropout writes Pd beside it from the CPU's Philox draw;
//             out = Pd v (cuBLAS), straight into out's (B, T, H, D) layout.
//   backward: dV = Pd^T dO; dPd = dO V^T; one row kernel: dS = scale * P * (dP - rowsum(dP * P))
//             with dP = dropout'(dPd); dQ = dS K; dK = dS^T Q.
// Each GEMM is one strided-batched call over the B * H heads where every operand's batch
// stride is H of its head strides, else one call per batch entry over its H heads (heads
// split from a (B, T, H, D) projection are the second case). Keys the mask pads out are not
// cut from the GEMMs as on the CPU: their scores are computed, and exp gives them the CPU's
// probability, exactly 0 (and their gradients exactly 0), as long as their rows of k and v are
// finite. Not flash attention: the (B, H, Tq, Tk) scores go through memory three times (the
// GEMM writes them, the row kernel reads and writes them, the second GEMM reads them).
#include <cmath>
#include <utility>

#include "backends/cuda/blas.h"
#include "backends/cuda/device_utils.cuh"
#include "backends/cuda/math.cuh"
#include "core/kernels.h"

namespace accel::cuda {

namespace {

// The dropout draw over the (B, H, Tq, Tk) probabilities, as dropout() on them would draw it:
// element i (row-major) is kept when the uniform of word i % 4 of Philox block offset + i / 4
// is at least p.
struct DropoutDraw {
  float p;           // 0: no dropout
  float keep_scale;  // 1 / (1 - p)
  uint64_t seed, offset;
};

__device__ __forceinline__ bool kept(const DropoutDraw& draw, int64_t i) {
  const uint4 block = philox_block_device(draw.seed, draw.offset + static_cast<uint64_t>(i >> 2));
  return philox_uniform_device(philox_word(block, static_cast<int>(i & 3))) >= draw.p;
}

// The additive mask expanded to (B, H, Tq, Tk), stride 0 where broadcast; null data: none.
struct MaskView {
  const float* data;
  int64_t stride_b, stride_h, stride_q, stride_k;
};
// [snippet:softmax-rows]
// In place over the B * H * Tq rows of Tk scores: S -> P = softmax(scale * S + mask), with an
// all -inf row shifted by 0 as the softmax kernels do. Where `dropped` is given it receives
// Pd = dropout(P), element i = row * Tk + c of the draw.
__global__ void softmax_rows_kernel(float* scores, float* dropped, MaskView mask, float scale, DropoutDraw draw,
                                    int64_t H, int64_t Tq, int64_t Tk, int64_t rows) {
  __shared__ float shared[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    float* row = scores + r * Tk;  // (Tk)
    const float* mask_row = nullptr;
    if (mask.data != nullptr) {
      const int64_t b = r / (H * Tq), h = (r / Tq) % H, query = r % Tq;
      mask_row = mask.data + b * mask.stride_b + h * mask.stride_h + query * mask.stride_q;
    }
    float max_value = -INFINITY;
    for (int64_t c = threadIdx.x; c < Tk; c += blockDim.x) {
      float x = row[c] * scale;
      if (mask_row != nullptr) x += mask_row[c * mask.stride_k];
      row[c] = x;
      max_value = fmaxf(max_value, x);
    }
    max_value = block_reduce(max_value, MaxOp{}, -INFINITY, shared);
    if (isinf(max_value) && max_value < 0) max_value = 0;  // all -inf: avoid NaN from inf - inf
    float sum = 0;
    for (int64_t c = threadIdx.x; c < Tk; c += blockDim.x) {
      const float e = dexp(row[c] - max_value);
      row[c] = e;
      sum += e;
    }
    sum = block_reduce(sum, SumOp{}, 0.0f, shared);
    const float inv = 1.0f / sum;
    for (int64_t c = threadIdx.x; c < Tk; c += blockDim.x) {
      const float p = row[c] * inv;
      row[c] = p;
      if (dropped != nullptr) dropped[r * Tk + c] = kept(draw, r * Tk + c) ? p * draw.keep_scale : 0.0f;
    }
  }
}
// [end]
// In place over the B * H * Tq rows of Tk: dPd = dO V^T -> dS = scale * P * (dP - rowsum(dP * P)),
// dP = dPd * keep * keep_scale where `keep` (row-major like probs) is given, else dPd.
__global__ void softmax_rows_backward_kernel(const float* probs, float* grad, const bool* keep, float keep_scale,
                                             float scale, int64_t Tk, int64_t rows) {
  __shared__ float shared[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* p_row = probs + r * Tk;  // (Tk)
    float* g_row = grad + r * Tk;         // (Tk)
    float dot = 0;
    for (int64_t c = threadIdx.x; c < Tk; c += blockDim.x) {
      float d = g_row[c];
      if (keep != nullptr) {
        d = keep[r * Tk + c] ? d * keep_scale : 0.0f;
        g_row[c] = d;
      }
      dot += d * p_row[c];
    }
    dot = block_reduce(dot, SumOp{}, 0.0f, shared);
    for (int64_t c = threadIdx.x; c < Tk; c += blockDim.x) g_row[c] = scale * (p_row[c] * (g_row[c] - dot));
  }
}

// Whether the heads of t (B, H, rows, cols) make one batch: the batch stride is H head strides.
bool heads_fold(const Tensor& t) { return t.size(0) == 1 || t.size(1) == 1 || t.stride(0) == t.size(1) * t.stride(1); }

// One operand of a per-head GEMM: t (B, H, rows, cols), entering as itself or transposed.
struct HeadOperand {
  const Tensor& t;
  bool transposed;
};

// The heads of a (B, H, rows, cols) operand as a 3-D batch: all B * H of them (entry < 0; only
// where heads_fold) or the H heads of batch entry `entry`; (n, cols, rows) when transposed.
Tensor heads(const HeadOperand& operand, int64_t entry) {
  const Tensor& t = operand.t;
  const bool all = entry < 0;
  const int64_t count = all ? t.size(0) * t.size(1) : t.size(1);
  const int64_t head_stride = all && t.size(1) == 1 ? t.stride(0) : t.stride(1);
  const int64_t offset = t.storage_offset() + (all ? 0 : entry * t.stride(0));
  const int64_t rows = t.size(2), cols = t.size(3), row_stride = t.stride(2), col_stride = t.stride(3);
  return operand.transposed
             ? Tensor::view_of(t.storage(), {count, cols, rows}, {head_stride, col_stride, row_stride}, offset, t.dtype())
             : Tensor::view_of(t.storage(), {count, rows, cols}, {head_stride, row_stride, col_stride}, offset, t.dtype());
}

// out (B, H, M, N) = a (B, H, M, K) @ b (B, H, K, N) head by head, each operand as given.
void gemm_per_head(const HeadOperand& a, const HeadOperand& b, const Tensor& out) {
  const HeadOperand c{out, false};
  if (heads_fold(a.t) && heads_fold(b.t) && heads_fold(out)) {
    gemm_strided_batched(heads(a, -1), heads(b, -1), heads(c, -1));
    return;
  }
  for (int64_t entry = 0; entry < out.size(0); ++entry) {
    gemm_strided_batched(heads(a, entry), heads(b, entry), heads(c, entry));
  }
}

// A contiguous float32 copy of a 16-bit q, k or v: this backend's kernels run on float32 heads.
Tensor float32_copy(const Tensor& t) {
  Tensor copy = Tensor::empty(t.sizes(), kFloat32, t.device());
  kernels::copy(t.device(), t, copy);
  return copy;
}

void attention_kernel(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, double scale,
                      double dropout_p, uint64_t seed, uint64_t offset, const Tensor& out, const Tensor& probs) {
  kernels::check_attention_dtypes("attention", {&q, &k, &v}, {&mask, &out, &probs});
  if (q.dtype() != kFloat32) {
    attention_kernel(float32_copy(q), float32_copy(k), float32_copy(v), mask, scale, dropout_p, seed, offset, out,
                     probs);
    return;
  }
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), Tk = k.size(2);
  if (out.numel() == 0) return;
  if (Tk == 0) {  // nothing to attend to: the empty sum
    kernels::fill(out.device(), out, Scalar(0));
    return;
  }
  const Tensor scores = probs.defined() ? probs : Tensor::empty({B, H, Tq, Tk}, kFloat32, q.device());
  gemm_per_head({q, false}, {k, true}, scores);  // S = q k^T, (B, H, Tq, Tk)
  const DropoutDraw draw{static_cast<float>(dropout_p), static_cast<float>(1.0 / (1.0 - dropout_p)), seed, offset};
  const Tensor dropped = draw.p > 0 ? Tensor::empty({B, H, Tq, Tk}, kFloat32, q.device()) : Tensor();
  const MaskView mask_view = mask.defined() ? MaskView{device_ptr<const float>(mask), mask.stride(0), mask.stride(1),
                                                       mask.stride(2), mask.stride(3)}
                                            : MaskView{nullptr, 0, 0, 0, 0};
  {
    KernelContext context(q);
    const int64_t rows = B * H * Tq;
    softmax_rows_kernel<<<row_blocks(rows), threads_per_row(Tk), 0, context.stream>>>(
        device_ptr<float>(scores), dropped.defined() ? device_ptr<float>(dropped) : nullptr, mask_view,
        static_cast<float>(scale), draw, H, Tq, Tk, rows);
    ACCEL_CUDA_CHECK_LAUNCH();
  }
  gemm_per_head({dropped.defined() ? dropped : scores, false}, {v, false}, out);  // out = Pd v, (B, H, Tq, D)
}

void attention_backward_kernel(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
                               const Tensor& probs, double scale, double dropout_p, uint64_t seed, uint64_t offset,
                               const Tensor& grad_q, const Tensor& grad_k, const Tensor& grad_v) {
  kernels::check_attention_dtypes("attention_backward", {&q, &k, &v, &grad_q, &grad_k, &grad_v}, {&grad_out, &probs});
  if (q.dtype() != kFloat32) {  // float32 gradients of float32 copies, rounded into the 16-bit ones
    const Tensor gq = Tensor::empty(grad_q.sizes(), kFloat32, q.device());
    const Tensor gk = Tensor::empty(grad_k.sizes(), kFloat32, q.device());
    const Tensor gv = Tensor::empty(grad_v.sizes(), kFloat32, q.device());
    attention_backward_kernel(grad_out, float32_copy(q), float32_copy(k), float32_copy(v), probs, scale, dropout_p,
                              seed, offset, gq, gk, gv);
    for (const auto& [from, to] : {std::pair{&gq, &grad_q}, std::pair{&gk, &grad_k}, std::pair{&gv, &grad_v}}) {
      kernels::copy(q.device(), *from, *to);
    }
    return;
  }
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), Tk = k.size(2), D = q.size(3);
  if (B * H == 0) return;
  if (Tq == 0 || Tk == 0 || D == 0) {  // empty products: zero gradients
    for (const Tensor* grad : {&grad_q, &grad_k, &grad_v}) {
      if (grad->numel() > 0) kernels::fill(grad->device(), *grad, Scalar(0));
    }
    return;
  }
  const Tensor scratch = Tensor::empty({B, H, Tq, Tk}, kFloat32, q.device());  // Pd, then dPd, then dS
  Tensor keep;                                                                  // (B, H, Tq, Tk) bool
  if (dropout_p > 0) {
    keep = Tensor::empty({B, H, Tq, Tk}, kBool, q.device());
    kernels::dropout(q.device(), probs, dropout_p, seed, offset, scratch, keep);  // the forward's draw, again
  }
  gemm_per_head({keep.defined() ? scratch : probs, true}, {grad_out, false}, grad_v);  // dV = Pd^T dO
  gemm_per_head({grad_out, false}, {v, true}, scratch);                               // dPd = dO V^T
  {
    KernelContext context(q);
    const int64_t rows = B * H * Tq;
    softmax_rows_backward_kernel<<<row_blocks(rows), threads_per_row(Tk), 0, context.stream>>>(
        device_ptr<const float>(probs), device_ptr<float>(scratch),
        keep.defined() ? device_ptr<const bool>(keep) : nullptr, static_cast<float>(1.0 / (1.0 - dropout_p)),
        static_cast<float>(scale), Tk, rows);
    ACCEL_CUDA_CHECK_LAUNCH();
  }
  gemm_per_head({scratch, false}, {k, false}, grad_q);  // dQ = dS K
  gemm_per_head({scratch, true}, {q, false}, grad_k);   // dK = dS^T Q
}

}  // namespace

ACCEL_REGISTER_KERNEL(attention, DeviceType::CUDA, attention_kernel);
ACCEL_REGISTER_KERNEL(attention_backward, DeviceType::CUDA, attention_backward_kernel);

}  // namespace accel::cuda
