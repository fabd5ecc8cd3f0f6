// Backward rules for pointwise ops and reductions. Each rule reduces a broadcast gradient
// back to its input's shape (sum_to) and dtype. Rules run with recording off.
#include <cmath>

#include "core/autograd/derivatives.h"
#include "core/autograd/node.h"
#include "core/kernels.h"

namespace accel::autograd::record {

namespace {

// What a rule needs to know about an input without keeping the input alive.
struct InputMeta {
  Shape shape;
  DType dtype;
  bool needs_grad;
  explicit InputMeta(const Tensor& t)
      : shape(t.sizes()), dtype(t.dtype()), needs_grad(t.defined() && t.requires_grad()) {}
  Tensor reduce(const Tensor& grad) const {
    if (!needs_grad) return Tensor();
    return sum_to(grad, shape).to(dtype);
  }
};

// grad * f'(y) through a fused backward kernel; grad and y have one shape.
Tensor fused_backward(BinaryOp op, const Tensor& grad, const Tensor& y) {
  Tensor g = grad.to(y.dtype());
  Tensor out = Tensor::empty(y.sizes(), y.dtype(), y.device());
  kernels::binary(y.device(), op, g, y, out);
  return out;
}

// Gradient of a reduction, viewed with size-1 dims where they were reduced.
Tensor unreduce(const Tensor& grad, const Shape& input_shape, const Shape& dims, bool keepdim) {
  Tensor g = grad;
  if (!keepdim) {
    for (int64_t d : dims) g = g.unsqueeze(d);
  }
  return g;
}

int64_t reduced_count(const Shape& shape, const Shape& dims) {
  int64_t n = 1;
  for (int64_t d : dims) n *= shape[d];
  return n;
}

}  // namespace

void add(Tensor& out, const Tensor& a, const Tensor& b, double alpha) {
  if (!any_requires_grad({&a, &b})) return;
  set_history(out, "AddBackward", {&a, &b}, [ma = InputMeta(a), mb = InputMeta(b), alpha](const Tensor& g) {
    return std::vector<Tensor>{ma.reduce(g), mb.reduce(alpha == 1.0 ? g : g * alpha)};
  });
}

void mul(Tensor& out, const Tensor& a, const Tensor& b) {
  if (!any_requires_grad({&a, &b})) return;
  InputMeta ma(a), mb(b);
  SavedTensor sa(mb.needs_grad ? a : Tensor(), "MulBackward");
  SavedTensor sb(ma.needs_grad ? b : Tensor(), "MulBackward");
  set_history(out, "MulBackward", {&a, &b}, [ma, mb, sa, sb](const Tensor& g) {
    return std::vector<Tensor>{ma.needs_grad ? ma.reduce(g * sb.get()) : Tensor(),
                               mb.needs_grad ? mb.reduce(g * sa.get()) : Tensor()};
  });
}

void div(Tensor& out, const Tensor& a, const Tensor& b) {
  if (!any_requires_grad({&a, &b})) return;
  InputMeta ma(a), mb(b);
  SavedTensor sa(mb.needs_grad ? a : Tensor(), "DivBackward");
  SavedTensor sb(b, "DivBackward");
  set_history(out, "DivBackward", {&a, &b}, [ma, mb, sa, sb](const Tensor& g) {
    Tensor denom = sb.get();
    return std::vector<Tensor>{ma.needs_grad ? ma.reduce(g / denom) : Tensor(),
                               mb.needs_grad ? mb.reduce(-g * sa.get() / (denom * denom)) : Tensor()};
  });
}

void pow(Tensor& out, const Tensor& base, const Tensor& exponent) {
  if (!any_requires_grad({&base, &exponent})) return;
  InputMeta mbase(base), mexp(exponent);
  SavedTensor sbase(base, "PowBackward"), sexp(exponent, "PowBackward"), sout(out, "PowBackward");
  set_history(out, "PowBackward", {&base, &exponent}, [mbase, mexp, sbase, sexp, sout](const Tensor& g) {
    Tensor x = sbase.get(), e = sexp.get();
    Tensor gbase, gexp;
    if (mbase.needs_grad) gbase = mbase.reduce(g * e * accel::pow(x, e - 1.0));
    if (mexp.needs_grad) {
      // d/de x^e = x^e ln x; zero where x == 0 (the limit PyTorch uses for x^e with e > 0).
      Tensor log_x = where(x == 0.0, zeros_like(x), accel::log(x));
      gexp = mexp.reduce(g * sout.get() * log_x);
    }
    return std::vector<Tensor>{gbase, gexp};
  });
}

void pow_scalar(Tensor& out, const Tensor& base, double exponent) {
  if (!any_requires_grad({&base})) return;
  SavedTensor sbase(base, "PowBackward");
  set_history(out, "PowBackward", {&base}, [sbase, exponent](const Tensor& g) {
    if (exponent == 0.0) return std::vector<Tensor>{zeros_like(g)};
    return std::vector<Tensor>{g * exponent * accel::pow(sbase.get(), exponent - 1.0)};
  });
}

namespace {
// maximum/minimum: the gradient goes to the winner, split evenly on ties (as PyTorch).
void extreme_pair(Tensor& out, const Tensor& a, const Tensor& b, bool is_max) {
  if (!any_requires_grad({&a, &b})) return;
  const char* name = is_max ? "MaximumBackward" : "MinimumBackward";
  SavedTensor sa(a, name), sb(b, name);
  set_history(out, name, {&a, &b}, [ma = InputMeta(a), mb = InputMeta(b), sa, sb, is_max](const Tensor& g) {
    Tensor x = sa.get(), y = sb.get();
    Tensor a_wins = (is_max ? x > y : x < y).to(g.dtype());
    Tensor tie = (x == y).to(g.dtype()) * 0.5;
    Tensor share_a = a_wins + tie;
    return std::vector<Tensor>{ma.reduce(g * share_a), mb.reduce(g * (1.0 - share_a))};
  });
}
}  // namespace

void maximum(Tensor& out, const Tensor& a, const Tensor& b) { extreme_pair(out, a, b, true); }
void minimum(Tensor& out, const Tensor& a, const Tensor& b) { extreme_pair(out, a, b, false); }

void unary(Tensor& out, UnaryOp op, const Tensor& x) {
  if (!any_requires_grad({&x})) return;
  InputMeta mx(x);
  // Save only what the rule reads: the input or the output.
  bool needs_input = op == UnaryOp::Abs || op == UnaryOp::Log || op == UnaryOp::Erf;
  bool needs_output = op == UnaryOp::Exp || op == UnaryOp::Sqrt || op == UnaryOp::Rsqrt ||
                      op == UnaryOp::Tanh || op == UnaryOp::Sigmoid || op == UnaryOp::Relu;
  SavedTensor sx(needs_input ? x : Tensor(), "UnaryBackward");
  SavedTensor sout(needs_output ? out : Tensor(), "UnaryBackward");
  const char* name = "UnaryBackward";
  switch (op) {
    case UnaryOp::Neg: name = "NegBackward"; break;
    case UnaryOp::Abs: name = "AbsBackward"; break;
    case UnaryOp::Exp: name = "ExpBackward"; break;
    case UnaryOp::Log: name = "LogBackward"; break;
    case UnaryOp::Sqrt: name = "SqrtBackward"; break;
    case UnaryOp::Rsqrt: name = "RsqrtBackward"; break;
    case UnaryOp::Tanh: name = "TanhBackward"; break;
    case UnaryOp::Sigmoid: name = "SigmoidBackward"; break;
    case UnaryOp::Relu: name = "ReluBackward"; break;
    case UnaryOp::Erf: name = "ErfBackward"; break;
    default: break;
  }
  set_history(out, name, {&x}, [op, mx, sx, sout](const Tensor& g) {
    Tensor grad;
    switch (op) {
      case UnaryOp::Neg: grad = -g; break;
      case UnaryOp::Abs: {
        Tensor sign = Tensor::empty(g.sizes(), mx.dtype, g.device());
        kernels::unary(g.device(), UnaryOp::Sign, sx.get(), sign);
        grad = g * sign;
        break;
      }
      case UnaryOp::Exp: grad = g * sout.get(); break;
      case UnaryOp::Log: grad = g / sx.get(); break;
      case UnaryOp::Sqrt: grad = g / (sout.get() * 2.0); break;
      case UnaryOp::Rsqrt: {
        Tensor y = sout.get();
        grad = g * y * y * y * -0.5;
        break;
      }
      case UnaryOp::Tanh: grad = fused_backward(BinaryOp::TanhBackward, g, sout.get()); break;
      case UnaryOp::Sigmoid: grad = fused_backward(BinaryOp::SigmoidBackward, g, sout.get()); break;
      case UnaryOp::Relu: grad = fused_backward(BinaryOp::ReluBackward, g, sout.get()); break;
      case UnaryOp::Erf: {
        Tensor x = sx.get();
        grad = g * accel::exp(-(x * x)) * (2.0 / std::sqrt(M_PI));
        break;
      }
      default: grad = zeros_like(g); break;  // sign: zero almost everywhere
    }
    return std::vector<Tensor>{grad.to(mx.dtype)};
  });
}

void gelu(Tensor& out, const Tensor& x, bool tanh_approximation) {
  if (!any_requires_grad({&x})) return;
  SavedTensor sx(x, "GeluBackward");
  set_history(out, "GeluBackward", {&x}, [sx, tanh_approximation](const Tensor& g) {
    BinaryOp op = tanh_approximation ? BinaryOp::GeluTanhBackward : BinaryOp::GeluBackward;
    return std::vector<Tensor>{fused_backward(op, g, sx.get())};
  });
}

void gelu_from_derivative(Tensor& out, const Tensor& x, const Tensor& derivative) {
  if (!any_requires_grad({&x})) return;
  SavedTensor sd(derivative, "GeluBackward");
  set_history(out, "GeluBackward", {&x}, [sd](const Tensor& g) {
    Tensor d = sd.get();
    return std::vector<Tensor>{mul(g.to(d.dtype()), d)};
  });
}

void clamp(Tensor& out, const Tensor& x, std::optional<double> min, std::optional<double> max) {
  if (!any_requires_grad({&x})) return;
  SavedTensor sx(x, "ClampBackward");
  set_history(out, "ClampBackward", {&x}, [sx, min, max](const Tensor& g) {
    Tensor v = sx.get();
    Tensor pass = ones_like(v).to(kBool);
    if (min) pass = logical_and(pass, v >= *min);
    if (max) pass = logical_and(pass, v <= *max);
    return std::vector<Tensor>{where(pass, g, zeros_like(g))};
  });
}

void where(Tensor& out, const Tensor& condition, const Tensor& a, const Tensor& b) {
  if (!any_requires_grad({&a, &b})) return;
  SavedTensor sc(condition, "WhereBackward");
  set_history(out, "WhereBackward", {&a, &b}, [ma = InputMeta(a), mb = InputMeta(b), sc](const Tensor& g) {
    Tensor c = sc.get();
    Tensor zero = zeros_like(g);
    return std::vector<Tensor>{ma.needs_grad ? ma.reduce(accel::where(c, g, zero)) : Tensor(),
                               mb.needs_grad ? mb.reduce(accel::where(c, zero, g)) : Tensor()};
  });
}

void to_dtype(Tensor& out, const Tensor& x) {
  if (!any_requires_grad({&x})) return;
  set_history(out, "ToCopyBackward", {&x}, [dtype = x.dtype(), device = x.device()](const Tensor& g) {
    return std::vector<Tensor>{g.to(device, dtype)};
  });
}

// ---- reductions ----

void sum(Tensor& out, const Tensor& x, const Shape& dims, bool keepdim) {
  if (!any_requires_grad({&x})) return;
  set_history(out, "SumBackward", {&x}, [mx = InputMeta(x), dims, keepdim](const Tensor& g) {
    return std::vector<Tensor>{unreduce(g, mx.shape, dims, keepdim).expand(mx.shape).to(mx.dtype)};
  });
}

void mean(Tensor& out, const Tensor& x, const Shape& dims, bool keepdim) {
  if (!any_requires_grad({&x})) return;
  set_history(out, "MeanBackward", {&x}, [mx = InputMeta(x), dims, keepdim](const Tensor& g) {
    double count = static_cast<double>(reduced_count(mx.shape, dims));
    return std::vector<Tensor>{(unreduce(g, mx.shape, dims, keepdim) / count).expand(mx.shape).to(mx.dtype)};
  });
}

void extreme(Tensor& out, const Tensor& x, const Shape& dims, bool keepdim) {
  if (!any_requires_grad({&x})) return;
  SavedTensor sx(x, "AmaxBackward"), sout(out, "AmaxBackward");
  set_history(out, "AmaxBackward", {&x}, [sx, sout, dims, keepdim](const Tensor& g) {
    Tensor v = sx.get();
    Tensor hit = (v == unreduce(sout.get(), v.sizes(), dims, keepdim)).to(g.dtype());
    Tensor count = hit.sum(dims, true);
    return std::vector<Tensor>{hit * unreduce(g, v.sizes(), dims, keepdim) / count};
  });
}

void extreme_at(Tensor& out, const Tensor& x, int64_t dim, bool keepdim, const Tensor& indices) {
  if (!any_requires_grad({&x})) return;
  SavedTensor sidx(indices, "MaxBackward");
  set_history(out, "MaxBackward", {&x}, [mx = InputMeta(x), sidx, dim, keepdim](const Tensor& g) {
    if (mx.shape.empty()) return std::vector<Tensor>{g};
    Shape dims{dim};
    Tensor idx = unreduce(sidx.get(), mx.shape, dims, keepdim);
    Tensor grad = unreduce(g, mx.shape, dims, keepdim).contiguous();
    return std::vector<Tensor>{scatter_add(zeros(mx.shape, {g.dtype(), g.device()}), dim, idx, grad)};
  });
}

void var(Tensor& out, const Tensor& x, const Shape& dims, int64_t correction, bool keepdim) {
  if (!any_requires_grad({&x})) return;
  SavedTensor sx(x, "VarBackward");
  set_history(out, "VarBackward", {&x}, [sx, dims, correction, keepdim](const Tensor& g) {
    Tensor v = sx.get();
    double n = static_cast<double>(reduced_count(v.sizes(), dims));
    Tensor centered = v - v.mean(dims, true);
    return std::vector<Tensor>{unreduce(g, v.sizes(), dims, keepdim) * centered * (2.0 / (n - correction))};
  });
}

}  // namespace accel::autograd::record
