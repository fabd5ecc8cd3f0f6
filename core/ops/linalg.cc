// matmul with torch.matmul semantics, built from differentiable views around one batched
// GEMM primitive (bmm), so broadcasting and transposes get their gradients from the views'
// own rules; linear (x @ W^T + b) as a single GEMM with a fused bias; and linear_gelu,
// which fuses the GELU too when nothing is recorded.
#include "core/autocast.h"
#include "core/autograd/derivatives.h"
#include "core/autograd/node.h"
#include "core/kernels.h"
#include "core/ops/op_utils.h"

namespace accel {

namespace {

// (B, M, K) @ (B, K, N) -> (B, M, N). Operands may be strided views (transposes, stride-0
// batch from expand); the kernel takes them as they are.
Tensor bmm(const Tensor& a, const Tensor& b) {
  Tensor out = Tensor::empty({a.size(0), a.size(1), b.size(2)}, a.dtype(), a.device());
  const GemmB b_use = autograd::any_requires_grad({&a, &b}) ? GemmB::Transient : GemmB::InferenceWeight;
  kernels::matmul(a.device(), a, b, Tensor(), out, false, b_use);
  autograd::record::bmm(out, a, b);
  return out;
}

// Collapses leading batch dims of an expanded (..., R, C) view into one. A fully broadcast
// batch stays a stride-0 view of one matrix; otherwise reshape views when the strides allow
// it and copies only when they do not.
Tensor collapse_batch(const Tensor& t, const Shape& batch) {
  const int64_t nb = static_cast<int64_t>(batch.size());
  Shape shape{shape_numel(batch), t.size(-2), t.size(-1)};
  bool all_broadcast = true;
  for (int64_t d = 0; d < nb; ++d) all_broadcast = all_broadcast && (batch[d] == 1 || t.stride(d) == 0);
  if (all_broadcast) {
    Tensor matrix = t;
    for (int64_t d = 0; d < nb; ++d) matrix = matrix.select(0, 0);
    return matrix.unsqueeze(0).expand(shape);
  }
  return t.reshape(shape);
}

}  // namespace

Tensor matmul(const Tensor& a_in, const Tensor& b_in) {
  detail::check_defined(a_in, "matmul", "first argument");
  detail::check_defined(b_in, "matmul", "second argument");
  const Tensor a = autocast::to_low_precision(a_in), b = autocast::to_low_precision(b_in);
  detail::common_device("matmul", {&a, &b});
  ACCEL_CHECK(a.dim() >= 1 && b.dim() >= 1, "matmul: both arguments need at least 1 dim, got shapes ",
              a.shape_string(), " and ", b.shape_string());
  ACCEL_CHECK(a.dtype() == b.dtype(), "matmul: expected both operands to have one dtype, got ", dtype_name(a.dtype()),
              " and ", dtype_name(b.dtype()), " (shapes ", a.shape_string(), " and ", b.shape_string(), ")");
  ACCEL_CHECK(a.is_floating_point(), "matmul: expected floating-point operands but got dtype ", dtype_name(a.dtype()));
  // Promote vectors to matrices; remember which dims to drop at the end.
  Tensor A = a.dim() == 1 ? a.unsqueeze(0) : a;
  Tensor B = b.dim() == 1 ? b.unsqueeze(1) : b;
  int64_t K = A.size(-1);
  ACCEL_CHECK(B.size(-2) == K, "matmul: shapes ", a.shape_string(), " and ", b.shape_string(),
              " cannot be multiplied (", A.size(-2), "x", K, " and ", B.size(-2), "x", B.size(-1), ")");
  Shape batch_a(A.sizes().begin(), A.sizes().end() - 2), batch_b(B.sizes().begin(), B.sizes().end() - 2);
  Shape batch = broadcast_shapes(batch_a, batch_b, "matmul");
  int64_t M = A.size(-2), N = B.size(-1);

  Shape a_full = batch, b_full = batch;
  a_full.insert(a_full.end(), {M, K});
  b_full.insert(b_full.end(), {K, N});
  Tensor A3 = collapse_batch(A.expand(a_full), batch);
  Tensor B3 = collapse_batch(B.expand(b_full), batch);
  Tensor out = bmm(A3, B3);

  Shape out_shape = batch;
  if (a.dim() > 1) out_shape.push_back(M);
  if (b.dim() > 1) out_shape.push_back(N);
  return out.reshape(out_shape);
}

Tensor linear(const Tensor& x_in, const Tensor& weight_in, const Tensor& bias_in) {
  detail::check_defined(x_in, "linear", "input");
  detail::check_defined(weight_in, "linear", "weight");
  const Tensor x = autocast::to_low_precision(x_in), weight = autocast::to_low_precision(weight_in);
  const Tensor bias = autocast::to_low_precision(bias_in);
  detail::common_device("linear", {&x, &weight, &bias});
  ACCEL_CHECK(weight.dim() == 2, "linear: expected a 2-D weight (out_features, in_features) but got shape ",
              weight.shape_string());
  ACCEL_CHECK(x.dim() >= 1 && x.size(-1) == weight.size(1), "linear: input of shape ", x.shape_string(),
              " does not match weight of shape ", weight.shape_string(), " (expected the input's last dim to be ",
              weight.size(1), ")");
  ACCEL_CHECK(x.dtype() == weight.dtype(), "linear: input dtype ", dtype_name(x.dtype()), " differs from weight dtype ",
              dtype_name(weight.dtype()));
  if (bias.defined()) {
    ACCEL_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0), "linear: expected a bias of shape [",
                weight.size(0), "] but got ", bias.shape_string());
    ACCEL_CHECK(bias.dtype() == x.dtype(), "linear: bias dtype ", dtype_name(bias.dtype()), " differs from input dtype ",
                dtype_name(x.dtype()));
  }
  const int64_t in_features = weight.size(1), out_features = weight.size(0);
  Tensor x2 = x.dim() == 2 ? x : x.reshape({-1, in_features});  // (rows, in)
  Tensor out2 = Tensor::empty({x2.size(0), out_features}, x.dtype(), x.device());
  const GemmB weight_use =
      autograd::any_requires_grad({&x, &weight, &bias}) ? GemmB::Transient : GemmB::InferenceWeight;
  {
    NoGradGuard no_grad;
    // (1, rows, in) @ (1, in, out): the weight enters transposed through its strides.
    kernels::matmul(x.device(), x2.unsqueeze(0), weight.t().unsqueeze(0), bias, out2.unsqueeze(0), false, weight_use);
  }
  autograd::record::linear(out2, x2, weight, bias);
  if (x.dim() == 2) return out2;
  Shape out_shape = x.sizes();
  out_shape.back() = out_features;
  return out2.reshape(out_shape);
}

namespace {

// Whether linear_gelu records as one node: float32 (autocast's 16-bit GEMMs take the
// composition), shapes linear accepts, and the CPU-style kernels on the device.
bool trains_fused(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  const DeviceType device = x.device().type;
  return autograd::any_requires_grad({&x, &weight, &bias}) && x.dtype() == kFloat32 && weight.dtype() == kFloat32 &&
         x.device() == weight.device() && weight.dim() == 2 && x.dim() >= 1 && x.size(-1) == weight.size(1) &&
         (!bias.defined() || (bias.dtype() == kFloat32 && bias.dim() == 1 && bias.size(0) == weight.size(0) &&
                              bias.device() == x.device())) &&
         kernels::gelu_with_derivative.has(device) && kernels::mul_column_sum.has(device) && kernels::matmul.has(device);
}

// Training: the GEMM without a bias epilogue, then one pass that adds the bias and writes
// gelu and gelu' (saved for backward, which multiplies by it and sums the bias gradient in the
// same pass). The pre-activation lives only between the two.
Tensor linear_gelu_training(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  const int64_t in_features = weight.size(1), out_features = weight.size(0);
  Tensor x2 = x.dim() == 2 ? x : x.reshape({-1, in_features});  // (rows, in)
  Tensor out2 = Tensor::empty({x2.size(0), out_features}, kFloat32, x.device());
  Tensor derivative = Tensor::empty(out2.sizes(), kFloat32, x.device());
  {
    NoGradGuard no_grad;
    Tensor pre_activation = Tensor::empty(out2.sizes(), kFloat32, x.device());  // (rows, out)
    kernels::matmul(x.device(), x2.unsqueeze(0), weight.t().unsqueeze(0), Tensor(), pre_activation.unsqueeze(0), false,
                    GemmB::Transient);
    kernels::gelu_with_derivative(x.device(), pre_activation, bias.defined() ? bias.contiguous() : Tensor(), false,
                                  out2, derivative);
  }
  autograd::record::linear_gelu(out2, x2, weight, bias, derivative);
  Shape out_shape = x.sizes();
  out_shape.back() = out_features;
  return out2.reshape(out_shape);
}

}  // namespace

Tensor linear_gelu(const Tensor& x_in, const Tensor& weight_in, const Tensor& bias_in) {
  const Tensor x = autocast::to_low_precision(x_in), weight = autocast::to_low_precision(weight_in);
  const Tensor bias = autocast::to_low_precision(bias_in);
  // float32, or bfloat16 (autocast's GEMM dtype: the epilogue then applies GELU to the fp32
  // accumulator and rounds once).
  const bool fusable = (x.dtype() == kFloat32 || x.dtype() == kBFloat16) && weight.dtype() == x.dtype() &&
                       x.device() == weight.device() && kernels::linear_gelu.has(x.device().type) &&
                       weight.dim() == 2 && x.dim() >= 1 && x.size(-1) == weight.size(1) &&
                       !autograd::any_requires_grad({&x, &weight, &bias});
  if (!fusable) {
    if (trains_fused(x, weight, bias)) return linear_gelu_training(x, weight, bias);
    return gelu(linear(x_in, weight_in, bias_in));
  }
  if (bias.defined()) {
    ACCEL_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0) && bias.dtype() == x.dtype() &&
                    bias.device() == x.device(),
                "linear_gelu: expected a ", dtype_name(x.dtype()), " bias of shape [", weight.size(0), "] on ",
                x.device().str(), " but got ", bias.shape_string(), " ", dtype_name(bias.dtype()), " on ",
                bias.device().str());
  }
  const int64_t in_features = weight.size(1), out_features = weight.size(0);
  Tensor x2 = x.dim() == 2 ? x : x.reshape({-1, in_features});  // (rows, in)
  Tensor out2 = Tensor::empty({x2.size(0), out_features}, x.dtype(), x.device());
  kernels::linear_gelu(x.device(), x2.unsqueeze(0), weight.t().unsqueeze(0), bias, out2.unsqueeze(0));
  Shape out_shape = x.sizes();
  out_shape.back() = out_features;
  return out2.reshape(out_shape);
}

}  // namespace accel
