// Neural-network functions: softmax/log_softmax, layer_norm (and add_layer_norm, the fused
// residual connection), embedding, dropout, and the
// losses (cross_entropy: the fused kernel, or log_softmax + nll_loss, with label smoothing;
// nll_loss; mse_loss).
#include "core/autocast.h"
#include "core/autograd/derivatives.h"
#include "core/autograd/node.h"
#include "core/kernels.h"
#include "core/ops/op_utils.h"
#include "core/random.h"

namespace accel {

namespace {
Tensor softmax_impl(const Tensor& x, int64_t dim, bool log) {
  const char* name = log ? "log_softmax" : "softmax";
  detail::check_floating(x, name);
  int64_t d = x.dim() == 0 ? 0 : wrap_dim(dim, x.dim(), name);
  Tensor in = x.dim() == 0 ? x.reshape({1}) : x;
  Tensor contiguous_in;
  {
    NoGradGuard no_grad;
    contiguous_in = in.contiguous();
  }
  Tensor out = Tensor::empty(contiguous_in.sizes(), x.dtype(), x.device());
  kernels::softmax(x.device(), contiguous_in, d, log, out);
  if (x.dim() == 0) out = out.detach().reshape({});
  autograd::record::softmax(out, x, d, log);
  return out;
}
}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_impl(autocast::to_full_precision(x), dim, false); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_impl(autocast::to_full_precision(x), dim, true); }

namespace {
// What layer_norm and add_layer_norm hand their kernel: x as (rows, cols), contiguous weight
// and bias, and the output and per-row statistics to fill.
struct LayerNormCall {
  int64_t rows = 0, cols = 0;
  Tensor x2, weight, bias, out, mean, rstd;
};

// Checks the arguments (x already in its compute dtype) and prepares the call.
LayerNormCall prepare_layer_norm(const char* op, const Tensor& x, const Shape& normalized_shape, const Tensor& weight,
                                 const Tensor& bias) {
  detail::check_floating(x, op);
  const int64_t nd = static_cast<int64_t>(normalized_shape.size());
  ACCEL_CHECK(nd >= 1 && nd <= x.dim(), op, ": normalized_shape ", shape_str(normalized_shape),
              " must have between 1 and ", x.dim(), " dims for an input of shape ", x.shape_string());
  ACCEL_CHECK(Shape(x.sizes().end() - nd, x.sizes().end()) == normalized_shape, op, ": input of shape ",
              x.shape_string(), " does not end with normalized_shape ", shape_str(normalized_shape));
  for (const Tensor* p : {&weight, &bias}) {
    if (!p->defined()) continue;
    ACCEL_CHECK(p->sizes() == normalized_shape, op, ": expected ", p == &weight ? "weight" : "bias",
                " of shape ", shape_str(normalized_shape), " but got ", p->shape_string());
    ACCEL_CHECK(p->dtype() == x.dtype(), op, ": ", p == &weight ? "weight" : "bias", " dtype ",
                dtype_name(p->dtype()), " differs from input dtype ", dtype_name(x.dtype()));
  }
  detail::common_device(op, {&x, &weight, &bias});
  LayerNormCall call;
  call.cols = shape_numel(normalized_shape);
  call.rows = call.cols == 0 ? 0 : x.numel() / call.cols;
  {
    NoGradGuard no_grad;
    call.x2 = x.contiguous().view({call.rows, call.cols});
    call.weight = weight.defined() ? weight.contiguous() : Tensor();
    call.bias = bias.defined() ? bias.contiguous() : Tensor();
  }
  const DType stat_dtype = x.dtype() == kFloat64 ? kFloat64 : kFloat32;
  call.out = Tensor::empty(x.sizes(), x.dtype(), x.device());
  call.mean = Tensor::empty({call.rows}, stat_dtype, x.device());
  call.rstd = Tensor::empty({call.rows}, stat_dtype, x.device());
  return call;
}
}  // namespace

Tensor layer_norm(const Tensor& x_in, const Shape& normalized_shape, const Tensor& weight_in, const Tensor& bias_in,
                  double eps) {
  const Tensor x = autocast::to_full_precision(x_in), weight = autocast::to_full_precision(weight_in);
  const Tensor bias = autocast::to_full_precision(bias_in);
  LayerNormCall c = prepare_layer_norm("layer_norm", x, normalized_shape, weight, bias);
  kernels::layer_norm(x.device(), c.x2, c.weight, c.bias, eps, c.out.view({c.rows, c.cols}), c.mean, c.rstd);
  autograd::record::layer_norm(c.out, x, weight, bias, c.mean, c.rstd, c.rows, c.cols);
  return c.out;
}

Tensor add_layer_norm(const Tensor& x_in, const Tensor& residual_in, const Shape& normalized_shape,
                      const Tensor& weight_in, const Tensor& bias_in, double eps) {
  detail::check_defined(x_in, "add_layer_norm", "x");
  detail::check_defined(residual_in, "add_layer_norm", "residual");
  const Tensor x = autocast::to_full_precision(x_in), residual = autocast::to_full_precision(residual_in);
  if (x.sizes() != residual.sizes() || x.dtype() != residual.dtype() || x.device() != residual.device() ||
      !kernels::add_layer_norm.has(x.device().type)) {
    return layer_norm(x_in + residual_in, normalized_shape, weight_in, bias_in, eps);  // broadcasting, promotion
  }
  const Tensor weight = autocast::to_full_precision(weight_in), bias = autocast::to_full_precision(bias_in);
  LayerNormCall c = prepare_layer_norm("add_layer_norm", x, normalized_shape, weight, bias);
  Tensor r2;
  {
    NoGradGuard no_grad;
    r2 = residual.contiguous().view({c.rows, c.cols});
  }
  const bool record = autograd::any_requires_grad({&x, &residual, &weight, &bias});
  Tensor sum = record ? Tensor::empty({c.rows, c.cols}, x.dtype(), x.device()) : Tensor();
  kernels::add_layer_norm(x.device(), c.x2, r2, c.weight, c.bias, eps, c.out.view({c.rows, c.cols}), sum, c.mean,
                          c.rstd);
  autograd::record::add_layer_norm(c.out, x, residual, sum, weight, bias, c.mean, c.rstd, c.rows, c.cols);
  return c.out;
}

Tensor embedding(const Tensor& weight, const Tensor& indices, std::optional<int64_t> padding_idx) {
  ACCEL_CHECK(weight.dim() == 2, "embedding: expected a 2-D weight (num_embeddings, dim) but got shape ",
              weight.shape_string());
  detail::check_index_dtype(indices, "embedding");
  detail::common_device("embedding", {&weight, &indices});
  detail::check_index_range(indices, weight.size(0), "embedding", "index");
  if (padding_idx) {
    ACCEL_CHECK(*padding_idx >= -weight.size(0) && *padding_idx < weight.size(0), "embedding: padding_idx ",
                *padding_idx, " is out of range for ", weight.size(0), " embeddings");
  }
  Tensor flat, table;
  {
    NoGradGuard no_grad;
    flat = indices.reshape({-1}).contiguous();
    table = weight.contiguous();
  }
  Tensor out = Tensor::empty({flat.numel(), weight.size(1)}, weight.dtype(), weight.device());
  kernels::index_select(weight.device(), table, 0, flat, out);
  Shape out_shape = indices.sizes();
  out_shape.push_back(weight.size(1));
  {
    NoGradGuard no_grad;
    out = out.view(out_shape);
  }
  std::optional<int64_t> pad = padding_idx;
  if (pad && *pad < 0) *pad += weight.size(0);
  autograd::record::embedding(out, weight, indices, pad);
  return out;
}

Tensor dropout(const Tensor& x, double p, bool training, Generator* generator) {
  ACCEL_CHECK(p >= 0.0 && p <= 1.0, "dropout: probability must be in [0, 1], got ", p);
  if (!training || p == 0.0) return x;
  detail::check_floating(x, "dropout");
  if (p == 1.0) return x * 0.0;
  Tensor in;
  {
    NoGradGuard no_grad;
    in = x.contiguous();
  }
  Generator& gen = generator ? *generator : default_generator();
  uint64_t offset = gen.reserve(static_cast<uint64_t>(x.numel()));
  Tensor out = Tensor::empty(x.sizes(), x.dtype(), x.device());
  Tensor mask = Tensor::empty(x.sizes(), kBool, x.device());
  kernels::dropout(x.device(), in, p, gen.seed(), offset, out, mask);
  autograd::record::dropout(out, x, mask, 1.0 / (1.0 - p));
  return out;
}

Tensor nll_loss(const Tensor& log_probs_in, const Tensor& target, int64_t ignore_index, Reduction reduction) {
  const Tensor log_probs = autocast::to_full_precision(log_probs_in);
  detail::check_floating(log_probs, "nll_loss");
  detail::check_index_dtype(target, "nll_loss");
  ACCEL_CHECK(log_probs.dim() >= 1, "nll_loss: expected input of shape (N, C) or (N, C, d1, ...) but got ",
              log_probs.shape_string());
  // Move the class dim last: (N, C, d...) -> (N, d..., C) so every sample is one row.
  Tensor lp = log_probs;
  if (lp.dim() == 1) lp = lp.unsqueeze(0);
  Shape expected_target(lp.sizes());
  expected_target.erase(expected_target.begin() + 1);
  if (log_probs.dim() == 1) expected_target = {};
  ACCEL_CHECK(target.sizes() == expected_target, "nll_loss: expected target of shape ", shape_str(expected_target),
              " for input of shape ", log_probs.shape_string(), " but got ", target.shape_string());
  const int64_t C = lp.size(1);
  if (lp.dim() > 2) {
    Shape order{0};
    for (int64_t d = 2; d < lp.dim(); ++d) order.push_back(d);
    order.push_back(1);
    lp = lp.permute(order);
  }
  Tensor rows = lp.reshape({-1, C});  // (samples, C)
  Tensor flat_target, valid, safe_target;
  {
    NoGradGuard no_grad;
    flat_target = target.reshape({-1}).to(kInt64).contiguous();
    valid = flat_target != scalar_tensor(ignore_index, kInt64, target.device());
    safe_target = where(valid, flat_target, scalar_tensor(0, kInt64, target.device()));
  }
  detail::check_index_range(safe_target, C, "nll_loss", "target class");
  Tensor weight = valid.to(log_probs.dtype());  // 1 for counted samples, 0 for ignored
  double total_weight;
  Tensor out;
  {
    NoGradGuard no_grad;
    Tensor picked = rows.gather(1, safe_target.unsqueeze(1)).squeeze(1);  // (samples)
    Tensor losses = -(picked * weight);
    total_weight = weight.sum().item_double();
    switch (reduction) {
      case Reduction::None: out = losses.reshape(target.sizes()); break;
      case Reduction::Sum: out = losses.sum(); break;
      case Reduction::Mean: out = losses.sum() / total_weight; break;  // 0/0 = NaN, as torch
    }
  }
  autograd::record::nll_loss(out, log_probs, target, weight, reduction, total_weight);
  return out;
}

namespace {
// The arguments of cross_entropy, checked once for both of its paths: floating logits (C) or
// (N, C, d...), integer targets of shape () or (N, d...), classes in [0, C) or ignore_index.
void check_cross_entropy_arguments(const Tensor& logits, const Tensor& target, int64_t ignore_index,
                                   double label_smoothing) {
  ACCEL_CHECK(label_smoothing >= 0.0 && label_smoothing <= 1.0, "cross_entropy: label_smoothing must be in [0, 1], got ",
              label_smoothing);
  detail::check_defined(logits, "cross_entropy", "logits");
  detail::check_defined(target, "cross_entropy", "target");
  detail::check_floating(logits, "cross_entropy");
  detail::check_index_dtype(target, "cross_entropy");
  detail::common_device("cross_entropy", {&logits, &target});
  ACCEL_CHECK(logits.dim() >= 1, "cross_entropy: expected logits of shape (C), (N, C) or (N, C, d1, ...) but got ",
              logits.shape_string());
  Shape expected_target;
  if (logits.dim() > 1) {
    expected_target = logits.sizes();
    expected_target.erase(expected_target.begin() + 1);
  }
  ACCEL_CHECK(target.sizes() == expected_target, "cross_entropy: expected target of shape ", shape_str(expected_target),
              " for logits of shape ", logits.shape_string(), " but got ", target.shape_string());
  Tensor safe_target;
  {
    NoGradGuard no_grad;
    Tensor ignored = target == scalar_tensor(ignore_index, target.dtype(), target.device());
    safe_target = where(ignored, zeros_like(target), target);
  }
  detail::check_index_range(safe_target, logits.dim() == 1 ? logits.size(0) : logits.size(1), "cross_entropy",
                            "target class");
}

// log_softmax then nll_loss, plus the smoothing term: the reference the fused kernel is
// tested against, and what runs on a device without the kernel.
Tensor cross_entropy_composed(const Tensor& logits, const Tensor& target, int64_t ignore_index, Reduction reduction,
                              double label_smoothing) {
  int64_t class_dim = logits.dim() == 1 ? 0 : 1;
  Tensor log_probs = log_softmax(logits, class_dim);  // fp32 under autocast
  Tensor loss = nll_loss(log_probs, target, ignore_index, reduction);
  if (label_smoothing == 0.0) return loss;
  // (1 - eps) * nll + eps * mean over classes of -log p, over the counted samples (torch's rule).
  const int64_t C = logits.size(class_dim);
  Tensor valid;
  {
    NoGradGuard no_grad;
    valid = (target != scalar_tensor(ignore_index, target.dtype(), target.device())).to(log_probs.dtype());
  }
  Tensor smooth = -log_probs.sum({class_dim}) * valid;  // per sample: -sum_c log p_c
  Tensor smooth_loss;
  switch (reduction) {
    case Reduction::None: smooth_loss = smooth; break;
    case Reduction::Sum: smooth_loss = smooth.sum(); break;
    case Reduction::Mean: smooth_loss = smooth.sum() / valid.sum(); break;
  }
  return loss * (1.0 - label_smoothing) + smooth_loss * (label_smoothing / static_cast<double>(C));
}

// One kernel pass over the rows of logits for the per-row losses, then the reduction; the
// backward is one pass too (record::cross_entropy), from the saved per-row log-sum-exp.
Tensor cross_entropy_fused(const Tensor& logits, const Tensor& target, int64_t ignore_index, Reduction reduction,
                           double label_smoothing) {
  const int64_t C = logits.dim() == 1 ? logits.size(0) : logits.size(1);
  // Every sample one row: (C) -> (1, C); (N, C, d...) -> (N, d..., C) -> (samples, C). Views
  // and copies recorded as usual, so the gradient of rows flows back to logits' layout.
  Tensor lp = logits.dim() == 1 ? logits.unsqueeze(0) : logits;
  if (lp.dim() > 2) {
    Shape order{0};
    for (int64_t d = 2; d < lp.dim(); ++d) order.push_back(d);
    order.push_back(1);
    lp = lp.permute(order);
  }
  const Tensor rows = lp.reshape({-1, C}).contiguous();  // (samples, C)
  const int64_t samples = rows.size(0);
  Tensor flat_target;
  {
    NoGradGuard no_grad;
    flat_target = target.reshape({-1}).to(kInt64).contiguous();  // (samples)
  }
  const DType stat_dtype = logits.dtype() == kFloat64 ? kFloat64 : kFloat32;
  Tensor losses = Tensor::empty({samples}, stat_dtype, logits.device());     // (samples)
  Tensor logsumexp = Tensor::empty({samples}, stat_dtype, logits.device());  // (samples)
  kernels::cross_entropy(logits.device(), rows, flat_target, ignore_index, label_smoothing, losses, logsumexp);
  double grad_scale = 1.0;  // d out / d losses[r] for a counted row
  Tensor out;
  {
    NoGradGuard no_grad;
    switch (reduction) {
      case Reduction::None: out = losses.reshape(target.sizes()); break;
      case Reduction::Sum: out = losses.sum(); break;
      case Reduction::Mean: {
        const Tensor counted = flat_target != scalar_tensor(ignore_index, kInt64, flat_target.device());
        const double count = static_cast<double>(counted.sum().item<int64_t>());
        out = losses.sum() / count;  // 0/0 = NaN when every target is ignored, as torch
        grad_scale = 1.0 / count;
        break;
      }
    }
    out = out.to(logits.dtype());
  }
  autograd::record::cross_entropy(out, rows, flat_target, logsumexp, ignore_index, label_smoothing, grad_scale);
  return out;
}
}  // namespace

Tensor cross_entropy(const Tensor& logits_in, const Tensor& target, int64_t ignore_index, Reduction reduction,
                     double label_smoothing, bool fused) {
  const Tensor logits = autocast::to_full_precision(logits_in);
  check_cross_entropy_arguments(logits, target, ignore_index, label_smoothing);
  if (fused && kernels::cross_entropy.has(logits.device().type)) {
    return cross_entropy_fused(logits, target, ignore_index, reduction, label_smoothing);
  }
  return cross_entropy_composed(logits, target, ignore_index, reduction, label_smoothing);
}

Tensor mse_loss(const Tensor& input_in, const Tensor& target_in, Reduction reduction) {
  const Tensor input = autocast::to_full_precision(input_in), target = autocast::to_full_precision(target_in);
  ACCEL_CHECK(input.sizes() == target.sizes(), "mse_loss: input of shape ", input.shape_string(),
              " and target of shape ", target.shape_string(), " differ");
  Tensor diff = input - target;
  Tensor squared = diff * diff;
  switch (reduction) {
    case Reduction::None: return squared;
    case Reduction::Sum: return squared.sum();
    case Reduction::Mean: break;
  }
  return squared.mean();
}

}  // namespace accel
