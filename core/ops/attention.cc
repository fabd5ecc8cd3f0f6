// Scaled dot-product attention: the fused kernel where the backend has one, else the
// composition of matmul, mul, add, softmax, dropout and matmul (the reference path, which
// every other dtype and device takes). Under autocast the fused kernel runs on fp32 casts of
// q, k and v: attention is a few percent of a BERT layer's FLOPs, so computing it in fp32 costs
// little and saves the composition's passes over the (B, H, Tq, Tk) scores.
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

bool fused_kernel_applies(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask) {
  for (const Tensor* t : {&q, &k, &v}) {
    if (t->dtype() != kFloat32) return false;
  }
  if (mask.defined() && (mask.requires_grad() || !mask.is_floating_point())) return false;
  return kernels::attention.has(q.device().type) && kernels::attention_backward.has(q.device().type);
}

// The kernel wants unit stride on the head dim; split-head views of a Linear output have it.
Tensor with_unit_last_stride(const Tensor& t) { return t.stride(3) == 1 || t.size(3) == 1 ? t : t.contiguous(); }

// The fp32 cast that autocast gives the fused kernel, made in the input's memory order: a
// head-split view (B, H, T, D) of a contiguous (B, T, H, D) projection output is cast as that
// contiguous tensor, one flat conversion pass, and viewed back. Cast as the view, the copy
// gathers rows of D elements at a stride of hidden and measured 4-5 times slower (BERT-base
// bf16 training: 36 such casts a step, and 36 more on their gradients, which now come back
// through the same transposes without a copy).
Tensor to_full_precision_in_memory_order(const Tensor& t) {
  if (!autocast::is_enabled() || (t.dtype() != kBFloat16 && t.dtype() != kFloat16)) return t;
  const Tensor heads_inner = t.transpose(1, 2);  // (B, T, H, D)
  if (heads_inner.is_contiguous()) return autocast::to_full_precision(heads_inner).transpose(1, 2);
  return autocast::to_full_precision(t);
}

// One run of the fused kernel on float32 q (B, H, Tq, D), k and v (B, H, Tk, D) with unit stride
// on D: the output (a (B, H, Tq, D) view of a (B, Tq, H, D) buffer), and what backward needs:
// the probabilities P when `record`, and the dropout draw (seed, offset) reserved from the
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

void kernels::check_attention_float32(const char* op, std::initializer_list<const Tensor*> tensors) {
  for (const Tensor* t : tensors) {
    ACCEL_CHECK(!t->defined() || t->dtype() == kFloat32, op, ": the fused kernel takes float32 tensors only, got ",
                dtype_name(t->dtype()), " on ", t->device().str());
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
  // Under autocast, recorded fp32 casts (gradients flow back through them in the inputs'
  // dtype); otherwise the inputs themselves.
  const Tensor q32 = to_full_precision_in_memory_order(q_in), k32 = to_full_precision_in_memory_order(k_in);
  const Tensor v32 = to_full_precision_in_memory_order(v_in);
  // Otherwise the composition, whose matmuls and softmax apply autocast's own precision rules
  // (16-bit GEMMs, fp32 softmax) where it is on.
  if (!fused || !fused_kernel_applies(q32, k32, v32, additive_mask) || (training && dropout_p == 1.0)) {
    return composed_attention(q_in, k_in, v_in, additive_mask, dropout_p, training, s, generator);
  }
  detail::common_device("scaled_dot_product_attention", {&q_in, &k_in, &v_in, &additive_mask});
  // Recorded copies where a copy is needed, so gradients still reach q_in, k_in and v_in.
  const Tensor q = with_unit_last_stride(q32), k = with_unit_last_stride(k32), v = with_unit_last_stride(v32);
  FusedAttention run = run_fused_attention(q, k, v, additive_mask, dropout_p, training, s, generator,
                                           autograd::any_requires_grad({&q, &k, &v}));
  autograd::record::attention(run.out, q, k, v, run.probs, s, run.dropout_p, run.seed, run.offset);
  return run.out;
}

bool packed_self_attention_fuses(Device device, DType dtype) {
  const bool float32 = dtype == kFloat32 || (autocast::is_enabled() && (dtype == kBFloat16 || dtype == kFloat16));
  return float32 && kernels::attention.has(device.type) && kernels::attention_backward.has(device.type);
}

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
  // Recording, the fused kernel runs on views of the projection (under autocast, of one
  // recorded fp32 cast of it) and its backward writes the three gradients into one buffer.
  const Tensor projection = qkv_in.is_contiguous() ? qkv_in : qkv_in.contiguous();
  const bool record = autograd::any_requires_grad({&projection});
  Tensor qkv = projection;
  if (record && autocast::is_enabled() && (qkv.dtype() == kBFloat16 || qkv.dtype() == kFloat16)) {
    qkv = autocast::to_full_precision(qkv);
  }
  // Otherwise scaled_dot_product_attention on the views does it (where it records, through
  // select's backward, which costs a full-size gradient per view).
  if (!record || !fused_kernel_applies(split(qkv, 0), split(qkv, 1), split(qkv, 2), additive_mask) ||
      (training && dropout_p == 1.0)) {
    return scaled_dot_product_attention(split(projection, 0), split(projection, 1), split(projection, 2), additive_mask,
                                        dropout_p, training, scale, true, generator);
  }
  detail::common_device("packed_self_attention", {&qkv_in, &additive_mask});
  const double s = scale.value_or(1.0 / std::sqrt(static_cast<double>(D)));
  FusedAttention run = run_fused_attention(split(qkv, 0), split(qkv, 1), split(qkv, 2), additive_mask, dropout_p,
                                           training, s, generator, true);
  autograd::record::packed_attention(run.out, qkv, heads, run.probs, s, run.dropout_p, run.seed, run.offset);
  return run.out;
}

}  // namespace accel
