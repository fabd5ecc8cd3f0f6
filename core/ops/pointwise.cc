// Pointwise ops: NumPy broadcasting and PyTorch type promotion (a Python-style number does
// not widen a tensor of its own kind: int tensor + 2 stays int, float16 tensor * 0.5 stays
// float16), unary math, where/clamp/masked_fill, in-place forms and operators.
#include "core/autograd/derivatives.h"
#include "core/autograd/node.h"
#include "core/kernels.h"
#include "core/ops/op_utils.h"

namespace accel {

Tensor wrap_scalar(Scalar value, const Tensor& like) {
  DType dtype = like.dtype();
  if (value.is_floating() && !like.is_floating_point()) dtype = kFloat32;
  else if (value.kind() == Scalar::Kind::Integral && like.dtype() == kBool) dtype = kInt64;
  return scalar_tensor(value, dtype, like.device());
}

namespace {

struct Broadcast {
  Tensor a, b;
  Shape shape;
  DType dtype;
};

// Promotes both to a common dtype and expands them to the broadcast shape (views).
Broadcast broadcast_pair(const Tensor& a, const Tensor& b, const char* op) {
  detail::check_defined(a, op, "first argument");
  detail::check_defined(b, op, "second argument");
  detail::common_device(op, {&a, &b});
  Broadcast r;
  r.shape = broadcast_shapes(a.sizes(), b.sizes(), op);
  r.dtype = promote_types(a.dtype(), b.dtype());
  r.a = a.to(r.dtype).expand(r.shape);
  r.b = b.to(r.dtype).expand(r.shape);
  return r;
}

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b, const char* name, bool bool_out = false) {
  Tensor out;
  {
    NoGradGuard no_grad;
    Broadcast p = broadcast_pair(a, b, name);
    out = Tensor::empty(p.shape, bool_out ? kBool : p.dtype, p.a.device());
    kernels::binary(out.device(), op, p.a, p.b, out);
  }
  return out;
}

Tensor unary(UnaryOp op, const Tensor& x, const char* name, bool needs_float) {
  detail::check_defined(x, name, "input");
  Tensor in = x;
  if (needs_float && !x.is_floating_point()) in = x.to(kFloat32);  // exp(int) is float, as in torch
  Tensor out = Tensor::empty(in.sizes(), in.dtype(), in.device());
  kernels::unary(out.device(), op, in, out);
  if (in.is_floating_point()) autograd::record::unary(out, op, x);
  return out;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b, Scalar alpha) {
  Tensor out;
  {
    NoGradGuard no_grad;
    Broadcast p = broadcast_pair(a, b, "add");
    out = Tensor::empty(p.shape, p.dtype, p.a.device());
    if (alpha.to_double() == 1.0) kernels::binary(out.device(), BinaryOp::Add, p.a, p.b, out);
    else kernels::add_scaled(out.device(), p.a, p.b, alpha.to_double(), out);
  }
  autograd::record::add(out, a, b, alpha.to_double());
  return out;
}

Tensor sub(const Tensor& a, const Tensor& b, Scalar alpha) {
  ACCEL_CHECK(a.dtype() != kBool || b.dtype() != kBool, "sub: subtraction of bool tensors is not supported");
  return add(a, b, -alpha.to_double());
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary(BinaryOp::Mul, a, b, "mul");
  autograd::record::mul(out, a, b);
  return out;
}

Tensor div(const Tensor& a, const Tensor& b) {
  // True division: integer inputs give float32, as torch.div.
  if (!a.is_floating_point() && !b.is_floating_point()) return div(a.to(kFloat32), b.to(kFloat32));
  Tensor out = binary(BinaryOp::Div, a, b, "div");
  autograd::record::div(out, a, b);
  return out;
}

Tensor pow(const Tensor& base, const Tensor& exponent) {
  Tensor out = binary(BinaryOp::Pow, base, exponent, "pow");
  autograd::record::pow(out, base, exponent);
  return out;
}

Tensor pow(const Tensor& base, Scalar exponent) {
  Tensor out = binary(BinaryOp::Pow, base, wrap_scalar(exponent, base), "pow");
  autograd::record::pow_scalar(out, base, exponent.to_double());
  return out;
}

Tensor maximum(const Tensor& a, const Tensor& b) {
  Tensor out = binary(BinaryOp::Maximum, a, b, "maximum");
  autograd::record::maximum(out, a, b);
  return out;
}

Tensor minimum(const Tensor& a, const Tensor& b) {
  Tensor out = binary(BinaryOp::Minimum, a, b, "minimum");
  autograd::record::minimum(out, a, b);
  return out;
}

Tensor eq(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Eq, a, b, "eq", true); }
Tensor ne(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Ne, a, b, "ne", true); }
Tensor lt(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Lt, a, b, "lt", true); }
Tensor le(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Le, a, b, "le", true); }
Tensor gt(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Gt, a, b, "gt", true); }
Tensor ge(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Ge, a, b, "ge", true); }
Tensor logical_and(const Tensor& a, const Tensor& b) { return binary(BinaryOp::LogicalAnd, a, b, "logical_and", true); }
Tensor logical_or(const Tensor& a, const Tensor& b) { return binary(BinaryOp::LogicalOr, a, b, "logical_or", true); }

Tensor logical_not(const Tensor& x) {
  Tensor out = Tensor::empty(x.sizes(), kBool, x.device());
  kernels::unary(out.device(), UnaryOp::LogicalNot, x, out);
  return out;
}

Tensor neg(const Tensor& x) {
  ACCEL_CHECK(x.dtype() != kBool, "neg: negation of a bool tensor is not supported; use logical_not");
  return unary(UnaryOp::Neg, x, "neg", false);
}
Tensor abs(const Tensor& x) { return unary(UnaryOp::Abs, x, "abs", false); }
Tensor exp(const Tensor& x) { return unary(UnaryOp::Exp, x, "exp", true); }
Tensor log(const Tensor& x) { return unary(UnaryOp::Log, x, "log", true); }
Tensor sqrt(const Tensor& x) { return unary(UnaryOp::Sqrt, x, "sqrt", true); }
Tensor rsqrt(const Tensor& x) { return unary(UnaryOp::Rsqrt, x, "rsqrt", true); }
Tensor tanh(const Tensor& x) { return unary(UnaryOp::Tanh, x, "tanh", true); }
Tensor sigmoid(const Tensor& x) { return unary(UnaryOp::Sigmoid, x, "sigmoid", true); }
Tensor relu(const Tensor& x) { return unary(UnaryOp::Relu, x, "relu", false); }
Tensor erf(const Tensor& x) { return unary(UnaryOp::Erf, x, "erf", true); }

Tensor gelu(const Tensor& x, const std::string& approximate) {
  ACCEL_CHECK(approximate == "none" || approximate == "tanh", "gelu: approximate must be \"none\" or \"tanh\", got \"",
              approximate, "\"");
  detail::check_floating(x, "gelu");
  bool tanh_form = approximate == "tanh";
  Tensor out = Tensor::empty(x.sizes(), x.dtype(), x.device());
  if (autograd::any_requires_grad({&x}) && kernels::gelu_with_derivative.has(x.device().type)) {
    // Training: the pass that computes gelu(x) also computes gelu'(x), for backward to multiply by.
    Tensor derivative = Tensor::empty(x.sizes(), x.dtype(), x.device());
    kernels::gelu_with_derivative(x.device(), x, Tensor(), tanh_form, out, derivative);
    autograd::record::gelu_from_derivative(out, x, derivative);
    return out;
  }
  kernels::unary(out.device(), tanh_form ? UnaryOp::GeluTanh : UnaryOp::Gelu, x, out);
  autograd::record::gelu(out, x, tanh_form);
  return out;
}

Tensor clamp(const Tensor& x, std::optional<Scalar> min, std::optional<Scalar> max) {
  ACCEL_CHECK(min || max, "clamp: at least one of min and max must be given");
  std::optional<double> lo = min ? std::optional<double>(min->to_double()) : std::nullopt;
  std::optional<double> hi = max ? std::optional<double>(max->to_double()) : std::nullopt;
  Tensor out = Tensor::empty(x.sizes(), x.dtype(), x.device());
  kernels::clamp(out.device(), x, lo, hi, out);
  autograd::record::clamp(out, x, lo, hi);
  return out;
}

Tensor where(const Tensor& condition, const Tensor& a, const Tensor& b) {
  ACCEL_CHECK(condition.dtype() == kBool, "where: expected a bool condition but got dtype ",
              dtype_name(condition.dtype()), " (shape ", condition.shape_string(), ")");
  Tensor out;
  {
    NoGradGuard no_grad;
    Broadcast p = broadcast_pair(a, b, "where");
    Shape shape = broadcast_shapes(condition.sizes(), p.shape, "where");
    detail::common_device("where", {&condition, &a});
    out = Tensor::empty(shape, p.dtype, a.device());
    kernels::where(out.device(), condition.expand(shape), p.a.expand(shape), p.b.expand(shape), out);
  }
  autograd::record::where(out, condition, a, b);
  return out;
}

Tensor where(const Tensor& condition, const Tensor& a, Scalar b) { return where(condition, a, wrap_scalar(b, a)); }

Tensor masked_fill(const Tensor& x, const Tensor& mask, Scalar value) {
  ACCEL_CHECK(mask.dtype() == kBool, "masked_fill: expected a bool mask but got dtype ", dtype_name(mask.dtype()));
  Shape shape = broadcast_shapes(x.sizes(), mask.sizes(), "masked_fill");
  ACCEL_CHECK(shape == x.sizes(), "masked_fill: mask of shape ", mask.shape_string(),
              " does not broadcast to the input shape ", x.shape_string());
  return where(mask, scalar_tensor(value, x.dtype(), x.device()), x);
}

// ---- in place ----

namespace {
Tensor& assign_inplace(Tensor& self, const Tensor& result, const char* op) {
  detail::check_inplace(self, op);
  ACCEL_CHECK(result.sizes() == self.sizes(), op, ": the result of shape ", result.shape_string(),
              " does not fit in place into shape ", self.shape_string());
  ACCEL_CHECK(promote_types(self.dtype(), result.dtype()) == self.dtype() || !result.is_floating_point() ||
              self.is_floating_point(), op, ": result dtype ", dtype_name(result.dtype()),
              " cannot be stored in place into dtype ", dtype_name(self.dtype()));
  kernels::copy(self.device(), result, self);
  self.storage()->bump_version();
  return self;
}
}  // namespace

Tensor& Tensor::add_(const Tensor& other, Scalar alpha) {
  detail::check_inplace(*this, "add_");
  if (is_contiguous() && other.sizes() == sizes() && other.dtype() == dtype() && other.device() == device()) {
    // Direct kernel into self (the hot path of gradient accumulation and optimizers).
    if (alpha.to_double() == 1.0) kernels::binary(device(), BinaryOp::Add, *this, other, *this);
    else kernels::add_scaled(device(), *this, other, alpha.to_double(), *this);
    storage()->bump_version();
    return *this;
  }
  return assign_inplace(*this, accel::add(*this, other, alpha), "add_");
}
Tensor& Tensor::sub_(const Tensor& other, Scalar alpha) { return add_(other, -alpha.to_double()); }
Tensor& Tensor::mul_(const Tensor& other) { return assign_inplace(*this, accel::mul(*this, other), "mul_"); }
Tensor& Tensor::mul_(Scalar other) { return mul_(wrap_scalar(other, *this)); }
Tensor& Tensor::div_(const Tensor& other) { return assign_inplace(*this, accel::div(*this, other), "div_"); }
Tensor& Tensor::div_(Scalar other) { return div_(wrap_scalar(other, *this)); }
Tensor& Tensor::add_(Scalar other) { return add_(wrap_scalar(other, *this)); }
Tensor& Tensor::clamp_(std::optional<Scalar> min, std::optional<Scalar> max) {
  return assign_inplace(*this, accel::clamp(*this, min, max), "clamp_");
}
Tensor& Tensor::masked_fill_(const Tensor& mask, Scalar value) {
  return assign_inplace(*this, accel::masked_fill(*this, mask, value), "masked_fill_");
}

// ---- operators ----

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator+(const Tensor& a, Scalar b) { return add(a, wrap_scalar(b, a)); }
Tensor operator-(const Tensor& a, Scalar b) { return sub(a, wrap_scalar(b, a)); }
Tensor operator*(const Tensor& a, Scalar b) { return mul(a, wrap_scalar(b, a)); }
Tensor operator/(const Tensor& a, Scalar b) { return div(a, wrap_scalar(b, a)); }
Tensor operator+(Scalar a, const Tensor& b) { return add(wrap_scalar(a, b), b); }
Tensor operator-(Scalar a, const Tensor& b) { return sub(wrap_scalar(a, b), b); }
Tensor operator*(Scalar a, const Tensor& b) { return mul(wrap_scalar(a, b), b); }
Tensor operator/(Scalar a, const Tensor& b) { return div(wrap_scalar(a, b), b); }
Tensor operator-(const Tensor& a) { return neg(a); }
Tensor operator==(const Tensor& a, const Tensor& b) { return eq(a, b); }
Tensor operator!=(const Tensor& a, const Tensor& b) { return ne(a, b); }
Tensor operator<(const Tensor& a, const Tensor& b) { return lt(a, b); }
Tensor operator<=(const Tensor& a, const Tensor& b) { return le(a, b); }
Tensor operator>(const Tensor& a, const Tensor& b) { return gt(a, b); }
Tensor operator>=(const Tensor& a, const Tensor& b) { return ge(a, b); }
Tensor operator==(const Tensor& a, Scalar b) { return eq(a, wrap_scalar(b, a)); }
Tensor operator!=(const Tensor& a, Scalar b) { return ne(a, wrap_scalar(b, a)); }
Tensor operator<(const Tensor& a, Scalar b) { return lt(a, wrap_scalar(b, a)); }
Tensor operator<=(const Tensor& a, Scalar b) { return le(a, wrap_scalar(b, a)); }
Tensor operator>(const Tensor& a, Scalar b) { return gt(a, wrap_scalar(b, a)); }
Tensor operator>=(const Tensor& a, Scalar b) { return ge(a, wrap_scalar(b, a)); }
Tensor& operator+=(Tensor& a, const Tensor& b) { return a.add_(b); }
Tensor& operator-=(Tensor& a, const Tensor& b) { return a.sub_(b); }
Tensor& operator*=(Tensor& a, const Tensor& b) { return a.mul_(b); }
Tensor& operator/=(Tensor& a, const Tensor& b) { return a.div_(b); }

}  // namespace accel
