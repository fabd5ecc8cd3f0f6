// Scaled dot-product attention: the fused kernel where the backend has one, else the
// composition of matmul, mul, add, softmax, dropout and matmul (the reference path, which
// every other dtype and device takes). Under autocast the fused kernel takes the 16-bit q, k and v
// as they are and computes in fp32 (kernels::AttentionFn): attention is a few percent of a BERT
// layer's FLOPs, so computing it in fp32 costs little and saves the composition's passes over
// the (B, H, Tq, Tk) scores; its output is fp32.
#include <cmath>

#include "core/autocast.h"
#include "core/autograd/derivatives.h"
#include "core/autograd/node.h"
#include "core/kernels.h"
#include "core/ops/op_utils.h"
#include "core/random.h"

namespace accel {

namespace {

Tensor composed_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& additive_mask,
                          double dropout_p, bool training, double scale, Generator* generator) {
  Tensor scores = matmul(q, k.transpose(-1, -2)) * scale;  // (B, H, Tq, Tk)
  if (additive_mask.defined()) scores = scores + additive_mask;
  Tensor probs = dropout(softmax(scores, -1), dropout_p, training, generator);
  return matmul(probs, v);  // (B, H, Tq, D)
}

// The fused kernel for q, k and v of this dtype on this device: float32, or 16-bit under
// autocast (the kernel reads them as they are).
bool fused_kernel_takes(Device device, DType dtype) {
  const bool sixteen_bit = dtype == kBFloat16 || dtype == kFloat16;
  return (dtype == kFloat32 || (sixteen_bit && autocast::is_enabled())) && kernels::attention.has(device.type) &&
         kernels::attention_backward.has(device.type);
}

bool fused_kernel_applies(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask) {
  if (k.dtype() != q.dtype() || v.dtype() != q.dtype()) return false;
  if (mask.defined() && (mask.requires_grad() || !mask.is_floating_point())) return false;
  return fused_kernel_takes(q.device(), q.dtype());
}

// The kernel wants unit stride on the head dim; split-head views of a Linear output have it.
Tensor with_unit_last_stride(const Tensor& t) { return t.stride(3) == 1 || t.size(3) == 1 ? t : t.contiguous(); }

// One run of the fused kernel on q (B, H, Tq, D), k and v (B, H, Tk, D) with unit stride on D:
// the output (a (B, H, Tq, D) view of a (B, Tq, H, D) buffer), and what backward needs: the
// probabilities P when `record`, and the dropout draw (seed, offset) reserved from the
// generator exactly as dropout() on P would reserve it.
struct FusedAttention {
  Tensor out, probs;
  double dropout_p;
  uint64_t seed = 0, offset = 0;
};
FusedAttention run_fused_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& additive_mask,
                                   double dropout_p, bool training, double scale, Generator* generator, bool record) {
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), Tk = k.size(2), D = q.size(3);
  Tensor mask;
  if (additive_mask.defined()) {
    NoGradGuard no_grad;
    mask = additive_mask.to(kFloat32).expand({B, H, Tq, Tk});
  }
  FusedAttention run;
  run.dropout_p = training ? dropout_p : 0.0;
  if (run.dropout_p > 0.0) {
    Generator& gen = generator ? *generator : default_generator();
    run.seed = gen.seed();
    run.offset = gen.reserve(static_cast<uint64_t>(B * H * Tq * Tk));
  }
  if (record) run.probs = Tensor::empty({B, H, Tq, Tk}, kFloat32, q.device());
  run.out = Tensor::empty({B, Tq, H, D}, kFloat32, q.device()).transpose(1, 2);  // (B, H, Tq, D) view
  kernels::attention(q.device(), q, k, v, mask, scale, run.dropout_p, run.seed, run.offset, run.out, run.probs);
  return run;
}

}  // namespace

void kernels::check_attention_dtypes(const char* op, std::initializer_list<const Tensor*> heads,
                                     std::initializer_list<const Tensor*> float32_only) {
  const DType head_dtype = (*heads.begin())->dtype();
  for (const Tensor* t : heads) {
    ACCEL_CHECK(t->dtype() == head_dtype && (head_dtype == kFloat32 || head_dtype == kBFloat16 ||
                                             head_dtype == kFloat16),
                op, ": the fused kernel takes q, k, v and their gradients in one of float32, bfloat16 and float16, "
                "got ", dtype_name(t->dtype()), " beside ", dtype_name(head_dtype), " on ", t->device().str());
  }
  for (const Tensor* t : float32_only) {
    ACCEL_CHECK(!t->defined() || t->dtype() == kFloat32, op, ": the fused kernel takes its mask, output, "
                "probabilities and output gradient in float32, got ", dtype_name(t->dtype()), " on ", t->device().str());
  }
}

Tensor scaled_dot_product_attention(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                                    const Tensor& additive_mask, double dropout_p, bool training,
                                    std::optional<double> scale, bool fused, Generator* generator) {
  detail::check_defined(q_in, "scaled_dot_product_attention", "q");
  detail::check_defined(k_in, "scaled_dot_product_attention", "k");
  detail::check_defined(v_in, "scaled_dot_product_attention", "v");
  ACCEL_CHECK(q_in.dim() == 4 && k_in.dim() == 4 && k_in.sizes() == v_in.sizes() && q_in.size(0) == k_in.size(0) &&
                  q_in.size(1) == k_in.size(1) && q_in.size(3) == k_in.size(3),
              "scaled_dot_product_attention: expected q (B, heads, Tq, head_dim) and k, v (B, heads, Tk, head_dim), "
              "got ", q_in.shape_string(), ", ", k_in.shape_string(), ", ", v_in.shape_string());
  ACCEL_CHECK(dropout_p >= 0.0 && dropout_p <= 1.0, "scaled_dot_product_attention: dropout probability must be in "
              "[0, 1], got ", dropout_p);
  const double s = scale.value_or(1.0 / std::sqrt(static_cast<double>(q_in.size(3))));
  // Otherwise the composition, whose matmuls and softmax apply autocast's own precision rules
  // (16-bit GEMMs, fp32 softmax) where it is on.
  if (!fused || !fused_kernel_applies(q_in, k_in, v_in, additive_mask) || (training && dropout_p == 1.0)) {
    return composed_attention(q_in, k_in, v_in, additive_mask, dropout_p, training, s, generator);
  }
  detail::common_device("scaled_dot_product_attention", {&q_in, &k_in, &v_in, &additive_mask});
  // Recorded copies where a copy is needed, so gradients still reach q_in, k_in and v_in.
  const Tensor q = with_unit_last_stride(q_in), k = with_unit_last_stride(k_in), v = with_unit_last_stride(v_in);
  FusedAttention run = run_fused_attention(q, k, v, additive_mask, dropout_p, training, s, generator,
                                           autograd::any_requires_grad({&q, &k, &v}));
  autograd::record::attention(run.out, q, k, v, run.probs, s, run.dropout_p, run.seed, run.offset);
  return run.out;
}

bool packed_self_attention_fuses(Device device, DType dtype) { return fused_kernel_takes(device, dtype); }

Tensor packed_self_attention(const Tensor& qkv_in, int64_t heads, const Tensor& additive_mask, double dropout_p,
                             bool training, std::optional<double> scale, Generator* generator) {
  detail::check_defined(qkv_in, "packed_self_attention", "qkv");
  ACCEL_CHECK(heads > 0 && qkv_in.dim() == 3 && qkv_in.size(2) % (3 * heads) == 0,
              "packed_self_attention: expected qkv (batch, seq, 3 * heads * head_dim) with ", heads,
              " heads, got shape ", qkv_in.shape_string());
  const int64_t D = qkv_in.size(2) / (3 * heads);
  auto split = [heads](const Tensor& qkv, int64_t i) { return kernels::packed_attention_head(qkv, heads, i); };
  ACCEL_CHECK(dropout_p >= 0.0 && dropout_p <= 1.0, "packed_self_attention: dropout probability must be in [0, 1], "
              "got ", dropout_p);
  // Recording, the fused kernel runs on views of the projection (under autocast, 16-bit as it
  // is) and its backward writes the three gradients into one buffer of its dtype.
  const Tensor qkv = qkv_in.is_contiguous() ? qkv_in : qkv_in.contiguous();
  const bool record = autograd::any_requires_grad({&qkv});
  // Otherwise scaled_dot_product_attention on the views does it (where it records, through
  // select's backward, which costs a full-size gradient per view).
  if (!record || !fused_kernel_applies(split(qkv, 0), split(qkv, 1), split(qkv, 2), additive_mask) ||
      (training && dropout_p == 1.0)) {
    return scaled_dot_product_attention(split(qkv, 0), split(qkv, 1), split(qkv, 2), additive_mask, dropout_p,
                                        training, scale, true, generator);
  }
  detail::common_device("packed_self_attention", {&qkv_in, &additive_mask});
  const double s = scale.value_or(1.0 / std::sqrt(static_cast<double>(D)));
  FusedAttention run = run_fused_attention(split(qkv, 0), split(qkv, 1), split(qkv, 2), additive_mask, dropout_p,
                                           training, s, generator, true);
  autograd::record::packed_attention(run.out, qkv, heads, run.probs, s, run.dropout_p, run.seed, run.offset);
  return run.out;
}

}  // namespace accel
