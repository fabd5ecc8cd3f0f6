// CUDA pointwise kernels: unary math, binary math and comparisons (with the fused backward
// helpers), GELU's training forward with its derivative, add with a scale, where, clamp. The op
// is a runtime switch inside one functor per dtype, which keeps the number of kernel
// instantiations (and nvcc's time) small.
// 16-bit floats compute in float and round once when stored, as on the CPU.
#include "backends/cuda/elementwise.cuh"
#include "backends/cuda/math.cuh"
#include "core/kernels.h"

namespace accel::cuda {

namespace {

template <typename T>
struct UnaryFunctor {
  UnaryOp op;
  __device__ T operator()(T value) const {
    using C = compute_t<T>;
    const C x = load_compute(value);
    C r = x;
    switch (op) {
      case UnaryOp::Neg: r = -x; break;
      case UnaryOp::Abs: r = x < C(0) ? -x : x; break;
      case UnaryOp::Sign: r = C((x > C(0)) - (x < C(0))); break;
      case UnaryOp::Relu: r = x > C(0) ? x : C(0); break;
      default:
        if constexpr (std::is_floating_point_v<C>) {
          switch (op) {
            case UnaryOp::Exp: r = dexp(x); break;
            case UnaryOp::Log: r = dlog(x); break;
            case UnaryOp::Sqrt: r = dsqrt(x); break;
            case UnaryOp::Rsqrt: r = C(1) / dsqrt(x); break;
            case UnaryOp::Tanh: r = dtanh(x); break;
            case UnaryOp::Sigmoid: r = C(1) / (C(1) + dexp(-x)); break;
            case UnaryOp::Gelu: r = gelu_exact(x); break;
            case UnaryOp::GeluTanh: r = gelu_tanh(x); break;
            case UnaryOp::Erf: r = derf(x); break;
            default: break;
          }
        }
    }
    return store_compute<T>(r);
  }
};

template <typename T>
struct LogicalNotFunctor {
  __device__ bool operator()(T x) const { return !(load_compute(x) != compute_t<T>(0)); }
};

bool is_integer_unary(UnaryOp op) {
  return op == UnaryOp::Neg || op == UnaryOp::Abs || op == UnaryOp::Sign || op == UnaryOp::Relu;
}

void unary_kernel(UnaryOp op, const Tensor& in, const Tensor& out) {
  if (op == UnaryOp::LogicalNot) {
    visit_all_device(in.dtype(), "logical_not", [&]<typename T>() {
      launch_elementwise<bool, T>(out, LogicalNotFunctor<T>{}, {&in});
    });
    return;
  }
  ACCEL_CHECK(is_floating(in.dtype()) || (in.dtype() != kBool && is_integer_unary(op)), "unary: op ", int(op),
              " has no kernel for dtype ", dtype_name(in.dtype()), " on cuda");
  visit_numeric_device(in.dtype(), "unary", [&]<typename T>() {
    launch_elementwise<T, T>(out, UnaryFunctor<T>{op}, {&in});
  });
}

bool is_comparison(BinaryOp op) {
  return op == BinaryOp::Eq || op == BinaryOp::Ne || op == BinaryOp::Lt || op == BinaryOp::Le ||
         op == BinaryOp::Gt || op == BinaryOp::Ge || op == BinaryOp::LogicalAnd || op == BinaryOp::LogicalOr;
}

template <typename T>
struct BinaryArithFunctor {
  BinaryOp op;
  __device__ T operator()(T a, T b) const {
    using C = compute_t<T>;
    const C x = load_compute(a), y = load_compute(b);
    C r = C(0);
    switch (op) {
      case BinaryOp::Add: r = x + y; break;
      case BinaryOp::Sub: r = x - y; break;
      case BinaryOp::Mul: r = x * y; break;
      case BinaryOp::Maximum: r = (x != x || x > y) ? x : y; break;  // NaN propagates
      case BinaryOp::Minimum: r = (x != x || x < y) ? x : y; break;
      default:
        if constexpr (std::is_floating_point_v<C>) {
          switch (op) {
            case BinaryOp::Div: r = x / y; break;
            case BinaryOp::Pow: r = dpow(x, y); break;
            case BinaryOp::GeluBackward: r = x * gelu_exact_grad(y); break;
            case BinaryOp::GeluTanhBackward: r = x * gelu_tanh_grad(y); break;
            case BinaryOp::TanhBackward: r = x * (C(1) - y * y); break;
            case BinaryOp::SigmoidBackward: r = x * y * (C(1) - y); break;
            case BinaryOp::ReluBackward: r = y > C(0) ? x : C(0); break;
            default: break;
          }
        } else if (op == BinaryOp::Pow) {
          r = C(1);
          for (C i = 0; i < y; ++i) r *= x;
        }
    }
    return store_compute<T>(r);
  }
};

template <typename T>
struct BinaryCompareFunctor {
  BinaryOp op;
  __device__ bool operator()(T a, T b) const {
    using C = compute_t<T>;
    const C x = load_compute(a), y = load_compute(b);
    switch (op) {
      case BinaryOp::Eq: return x == y;
      case BinaryOp::Ne: return x != y;
      case BinaryOp::Lt: return x < y;
      case BinaryOp::Le: return x <= y;
      case BinaryOp::Gt: return x > y;
      case BinaryOp::Ge: return x >= y;
      case BinaryOp::LogicalAnd: return x != C(0) && y != C(0);
      default: return x != C(0) || y != C(0);  // LogicalOr
    }
  }
};

struct BoolBinaryFunctor {
  BinaryOp op;
  __device__ bool operator()(bool x, bool y) const {
    switch (op) {
      case BinaryOp::Eq: return x == y;
      case BinaryOp::Ne: return x != y;
      case BinaryOp::LogicalOr: case BinaryOp::Add: case BinaryOp::Maximum: return x || y;
      default: return x && y;  // LogicalAnd, Mul, Minimum
    }
  }
};

void binary_kernel(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  if (a.dtype() == kBool) {
    launch_elementwise<bool, bool, bool>(out, BoolBinaryFunctor{op}, {&a, &b});
    return;
  }
  if (is_comparison(op)) {
    visit_numeric_device(a.dtype(), "binary", [&]<typename T>() {
      launch_elementwise<bool, T, T>(out, BinaryCompareFunctor<T>{op}, {&a, &b});
    });
    return;
  }
  const bool integer_ok = op == BinaryOp::Add || op == BinaryOp::Sub || op == BinaryOp::Mul ||
                          op == BinaryOp::Maximum || op == BinaryOp::Minimum || op == BinaryOp::Pow;
  ACCEL_CHECK(is_floating(a.dtype()) || integer_ok,
              op == BinaryOp::Div ? "div: integer division is not supported; convert to a floating dtype first"
                                  : "binary: this op has no integer kernel on cuda",
              " (op ", int(op), ", dtype ", dtype_name(a.dtype()), ")");
  visit_numeric_device(a.dtype(), "binary", [&]<typename T>() {
    launch_elementwise<T, T, T>(out, BinaryArithFunctor<T>{op}, {&a, &b});
  });
}

template <typename T>
struct AddScaledFunctor {
  compute_t<T> scale;
  __device__ T operator()(T a, T b) const { return store_compute<T>(load_compute(a) + scale * load_compute(b)); }
};

// GELU's training forward (kernels::GeluWithDerivativeFn): gelu(x) and gelu'(x) with the
// functions of the unary and GeluBackward paths, so the backward's grad * gelu'(x) is the
// product GeluBackward computed (16-bit floats round gelu'(x) once more, as on the CPU).
template <typename T>
struct GeluFunctor {
  bool tanh_form, derivative;
  __device__ T operator()(T value) const {
    const compute_t<T> x = load_compute(value);
    if (derivative) return store_compute<T>(tanh_form ? gelu_tanh_grad(x) : gelu_exact_grad(x));
    return store_compute<T>(tanh_form ? gelu_tanh(x) : gelu_exact(x));
  }
};

// Contiguous x (rows, cols), or any contiguous x without a bias (cols = numel): both outputs in
// one pass, bias[col] added to x first in the compute type, as the CPU adds it in float.
template <typename T>
__global__ void gelu_with_derivative_contiguous(int64_t n, int64_t cols, bool tanh_form, const T* x, const T* bias,
                                                T* out, T* derivative) {
  using C = compute_t<T>;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    C v = load_compute(x[i]);
    if (bias != nullptr) v += load_compute(bias[i % cols]);
    out[i] = store_compute<T>(tanh_form ? gelu_tanh(v) : gelu_exact(v));
    derivative[i] = store_compute<T>(tanh_form ? gelu_tanh_grad(v) : gelu_exact_grad(v));
  }
}

void gelu_with_derivative_kernel(const Tensor& x, const Tensor& bias, bool tanh_form, const Tensor& out,
                                 const Tensor& derivative) {
  ACCEL_CHECK(!bias.defined() || (x.dim() == 2 && x.is_contiguous() && bias.dim() == 1 && bias.size(0) == x.size(1) &&
                                  bias.is_contiguous() && bias.dtype() == x.dtype()),
              "gelu_with_derivative: a bias takes a contiguous (rows, cols) input and a (cols) bias of its dtype, got ",
              x.shape_string(), " ", dtype_name(x.dtype()), " and ", bias.shape_string(), " ",
              dtype_name(bias.dtype()));
  visit_floating_device(x.dtype(), "gelu_with_derivative", [&]<typename T>() {
    if (x.is_contiguous() && out.is_contiguous() && derivative.is_contiguous()) {
      const int64_t n = x.numel();
      if (n == 0) return;
      KernelContext context(x);
      gelu_with_derivative_contiguous<T><<<grid_for(n), kBlockSize, 0, context.stream>>>(
          n, bias.defined() ? x.size(1) : n, tanh_form, device_ptr<const T>(x),
          bias.defined() ? device_ptr<const T>(bias) : nullptr, device_ptr<T>(out), device_ptr<T>(derivative));
      ACCEL_CUDA_CHECK_LAUNCH();
      return;
    }
    launch_elementwise<T, T>(out, GeluFunctor<T>{tanh_form, false}, {&x});
    launch_elementwise<T, T>(derivative, GeluFunctor<T>{tanh_form, true}, {&x});
  });
}

void add_scaled_kernel(const Tensor& a, const Tensor& b, double alpha, const Tensor& out) {
  visit_numeric_device(a.dtype(), "add", [&]<typename T>() {
    launch_elementwise<T, T, T>(out, AddScaledFunctor<T>{static_cast<compute_t<T>>(alpha)}, {&a, &b});
  });
}

template <typename T>
struct WhereFunctor {
  __device__ T operator()(bool c, T a, T b) const { return c ? a : b; }
};

void where_kernel(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) {
  visit_all_device(a.dtype(), "where", [&]<typename T>() {
    launch_elementwise<T, bool, T, T>(out, WhereFunctor<T>{}, {&cond, &a, &b});
  });
}

template <typename T>
struct ClampFunctor {
  bool has_min, has_max;
  compute_t<T> lo, hi;
  __device__ T operator()(T v) const {
    compute_t<T> x = load_compute(v);
    if (x != x) return v;  // NaN stays NaN, as torch.clamp
    if (has_min && x < lo) x = lo;
    if (has_max && x > hi) x = hi;
    return store_compute<T>(x);
  }
};

void clamp_kernel(const Tensor& in, std::optional<double> min, std::optional<double> max, const Tensor& out) {
  visit_numeric_device(in.dtype(), "clamp", [&]<typename T>() {
    using C = compute_t<T>;
    ClampFunctor<T> f{min.has_value(), max.has_value(), min ? static_cast<C>(*min) : C(0),
                      max ? static_cast<C>(*max) : C(0)};
    launch_elementwise<T, T>(out, f, {&in});
  });
}

}  // namespace

ACCEL_REGISTER_KERNEL(unary, DeviceType::CUDA, unary_kernel);
ACCEL_REGISTER_KERNEL(binary, DeviceType::CUDA, binary_kernel);
ACCEL_REGISTER_KERNEL(gelu_with_derivative, DeviceType::CUDA, gelu_with_derivative_kernel);
ACCEL_REGISTER_KERNEL(add_scaled, DeviceType::CUDA, add_scaled_kernel);
ACCEL_REGISTER_KERNEL(where, DeviceType::CUDA, where_kernel);
ACCEL_REGISTER_KERNEL(clamp, DeviceType::CUDA, clamp_kernel);

}  // namespace accel::cuda
