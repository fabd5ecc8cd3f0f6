// CPU pointwise kernels: unary math, binary math and comparisons, add with a scale, where,
// clamp. 16-bit floats compute in float and round once when stored.
#include <cmath>
#include <vector>

#include "backends/cpu/float_chunks.h"
#include "backends/cpu/loops.h"
#include "backends/cpu/vec_math.h"
#include "core/kernels.h"

namespace accel::cpu {

namespace {

constexpr double kSqrt1_2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;
constexpr double kSqrt2OverPi = 0.79788456080286535588;
constexpr double kGeluTanhCoeff = 0.044715;

// The scalar forms (float64, and strided inputs): cdf(x) = erfc(-x / sqrt 2) / 2, which keeps
// its relative accuracy in the negative tail where 1 + erf(x / sqrt 2) cancels.
template <typename T>
T gelu_exact(T x) { return T(0.5) * x * std::erfc(-x * T(kSqrt1_2)); }
template <typename T>
T gelu_tanh(T x) {
  T inner = T(kSqrt2OverPi) * (x + T(kGeluTanhCoeff) * x * x * x);
  return T(0.5) * x * (T(1) + std::tanh(inner));
}
template <typename T>
T gelu_exact_grad(T x) {
  T cdf = T(0.5) * std::erfc(-x * T(kSqrt1_2));
  T pdf = std::exp(T(-0.5) * x * x) * T(kInvSqrt2Pi);
  return cdf + x * pdf;
}
template <typename T>
T gelu_tanh_grad(T x) {
  T x2 = x * x;
  T inner = T(kSqrt2OverPi) * (x + T(kGeluTanhCoeff) * x2 * x);
  T t = std::tanh(inner);
  T d_inner = T(kSqrt2OverPi) * (T(1) + T(3 * kGeluTanhCoeff) * x2);
  return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * d_inner;
}

template <typename T>
void unary_typed(UnaryOp op, const Tensor& in, const Tensor& out) {
  using M = opmath_t<T>;
  auto run = [&](auto f) { map_elementwise<T, T>(out, [&](T x) { return T(f(M(x))); }, {&in}); };
  switch (op) {
    case UnaryOp::Neg: return run([](M x) { return -x; });
    case UnaryOp::Abs: return run([](M x) { return x < M(0) ? -x : x; });
    case UnaryOp::Sign: return run([](M x) { return M((x > M(0)) - (x < M(0))); });
    default: break;
  }
  if constexpr (std::is_floating_point_v<M>) {
    switch (op) {
      case UnaryOp::Exp: return run([](M x) { return std::exp(x); });
      case UnaryOp::Log: return run([](M x) { return std::log(x); });
      case UnaryOp::Sqrt: return run([](M x) { return std::sqrt(x); });
      case UnaryOp::Rsqrt: return run([](M x) { return M(1) / std::sqrt(x); });
      case UnaryOp::Tanh: return run([](M x) { return std::tanh(x); });
      case UnaryOp::Sigmoid: return run([](M x) { return M(1) / (M(1) + std::exp(-x)); });
      case UnaryOp::Relu: return run([](M x) { return x > M(0) ? x : M(0); });
      case UnaryOp::Gelu: return run([](M x) { return gelu_exact(x); });
      case UnaryOp::GeluTanh: return run([](M x) { return gelu_tanh(x); });
      case UnaryOp::Erf: return run([](M x) { return std::erf(x); });
      default: break;
    }
  } else if (op == UnaryOp::Relu) {
    return run([](M x) { return x > M(0) ? x : M(0); });
  }
  ACCEL_FAIL("unary: op ", int(op), " has no kernel for dtype ", dtype_name(in.dtype()), " on cpu");
}

// GELU over n floats: y = x * cdf(x); dydx, where not null, receives gelu'(x) = cdf(x) + x * pdf(x)
// (erf form) or its tanh-form counterpart. One definition for the forward, the backward and the
// training forward that saves the derivative, so the three agree bit for bit.
//
// The erf form takes cdf(x) from erfc(|x| / sqrt 2) = exp(-x^2 / 2) * erfcx(|x| / sqrt 2), with
// the scaled erfcx as a degree-9 polynomial in t = 1 / (1 + 0.3 |x| / sqrt 2), fitted for
// relative error (1.7e-8 at most on [0, 10]; kErfcxPoly, from scripts/fit_erfcx_poly.py). Its
// exp(-x^2 / 2) is the pdf's too, so one exp serves y and gelu' where erf then exp took two
// transcendental calls, and cdf(x) = erfc / 2 for x < 0 keeps its relative accuracy in the
// negative tail, which 0.5 * (1 + erf(x / sqrt 2)) loses to cancellation (float32: 1e-5
// relative at x = -3, every digit below -9; here within 2e-6 on [-10, 10]). x^2 is split
// exactly (fma) so that the exponent of the tail is not rounded.
constexpr float kErfcxPoly[] = {-1.5852682500018703e-05f, 0.1694741857875065f,  0.16848775903635288f,
                                0.15815467780036538f,     0.1879182947302884f,  -0.04647825192786976f,
                                0.49195094679349904f,     -0.47181311103180534f, 0.46884137085073063f,
                                -0.1265200360607691f};
void gelu_chunk(const float* xs, float* y, float* dydx, int64_t n) {
  float e[kFloatChunk], tail[kFloatChunk];
  for (int64_t i = 0; i < n; ++i) {
    const float square = xs[i] * xs[i];
    const float low = std::isfinite(square) ? std::fma(xs[i], xs[i], -square) : 0.0f;  // x^2 = square + low
    e[i] = -0.5f * square;
    tail[i] = -0.5f * low;
  }
  vec::exp(e, e, n);
  for (int64_t i = 0; i < n; ++i) {
    const float pdf_scaled = e[i] * (1.0f + tail[i]);  // exp(-x^2 / 2)
    const float t = 1.0f / (1.0f + 0.3f * (std::fabs(xs[i]) * float(kSqrt1_2)));
    float erfcx = kErfcxPoly[9];
    for (int k = 8; k >= 0; --k) erfcx = erfcx * t + kErfcxPoly[k];
    const float half_erfc = 0.5f * (erfcx * pdf_scaled);
    const float cdf = xs[i] >= 0.0f ? 1.0f - half_erfc : half_erfc;
    y[i] = xs[i] * cdf;
    tail[i] = cdf;  // reused: the cdf, for the derivative below
    e[i] = pdf_scaled;
  }
  if (dydx == nullptr) return;
  for (int64_t i = 0; i < n; ++i) dydx[i] = tail[i] + xs[i] * e[i] * float(kInvSqrt2Pi);
}
void gelu_tanh_chunk(const float* xs, float* y, float* dydx, int64_t n) {
  float t[kFloatChunk];
  for (int64_t i = 0; i < n; ++i) t[i] = float(kSqrt2OverPi) * (xs[i] + float(kGeluTanhCoeff) * xs[i] * xs[i] * xs[i]);
  vec::tanh(t, t, n);
  for (int64_t i = 0; i < n; ++i) y[i] = 0.5f * xs[i] * (1.0f + t[i]);
  if (dydx == nullptr) return;
  for (int64_t i = 0; i < n; ++i) {
    float x2 = xs[i] * xs[i];
    float d_inner = float(kSqrt2OverPi) * (1.0f + float(3 * kGeluTanhCoeff) * x2);
    dydx[i] = 0.5f * (1.0f + t[i]) + 0.5f * xs[i] * (1.0f - t[i] * t[i]) * d_inner;
  }
}

// gelu_chunk or gelu_tanh_chunk, by form.
void gelu_form_chunk(bool tanh_form, const float* xs, float* y, float* dydx, int64_t n) {
  if (tanh_form) gelu_tanh_chunk(xs, y, dydx, n);
  else gelu_chunk(xs, y, dydx, n);
}

// Contiguous float transcendental ops (float32, and the 16-bit floats through float chunks),
// through the vectorized math of vec_math.h. Returns false for the cases it does not cover.
bool unary_float_fast(UnaryOp op, const Tensor& in, const Tensor& out) {
  if (!is_chunkable_float(in.dtype()) || out.dtype() != in.dtype() || !in.is_contiguous() || !out.is_contiguous()) {
    return false;
  }
  if (op != UnaryOp::Exp && op != UnaryOp::Tanh && op != UnaryOp::Sigmoid && op != UnaryOp::Gelu &&
      op != UnaryOp::GeluTanh && op != UnaryOp::Erf) {
    return false;
  }
  parallel_for(in.numel(), kGrainSize, [&](int64_t begin, int64_t end) {
    float t[kFloatChunk];
    for_each_float_chunk<1, 1>(begin, end, {&in}, {&out}, [&](int64_t, int64_t n, const auto& x, const auto& y) {
      const float* xs = x[0];
      float* ys = y[0];
      switch (op) {
        case UnaryOp::Exp: vec::exp(xs, ys, n); break;
        case UnaryOp::Tanh: vec::tanh(xs, ys, n); break;
        case UnaryOp::Erf: vec::erf(xs, ys, n); break;
        case UnaryOp::Sigmoid:
          for (int64_t i = 0; i < n; ++i) t[i] = -xs[i];
          vec::exp(t, t, n);
          for (int64_t i = 0; i < n; ++i) ys[i] = 1.0f / (1.0f + t[i]);
          break;
        case UnaryOp::Gelu: gelu_chunk(xs, ys, nullptr, n); break;
        default: gelu_tanh_chunk(xs, ys, nullptr, n); break;  // GeluTanh
      }
    });
  });
  return true;
}

// grad * gelu'(x) for contiguous floats of one dtype, vectorized and chunked as above.
bool gelu_backward_float_fast(BinaryOp op, const Tensor& grad, const Tensor& x, const Tensor& out) {
  if ((op != BinaryOp::GeluBackward && op != BinaryOp::GeluTanhBackward) || !is_chunkable_float(x.dtype()) ||
      grad.dtype() != x.dtype() || out.dtype() != x.dtype() || !x.is_contiguous() || !grad.is_contiguous() ||
      !out.is_contiguous()) {
    return false;
  }
  const bool tanh_form = op == BinaryOp::GeluTanhBackward;
  parallel_for(x.numel(), kGrainSize, [&](int64_t begin, int64_t end) {
    float y[kFloatChunk], dydx[kFloatChunk];
    for_each_float_chunk<2, 1>(begin, end, {&x, &grad}, {&out}, [&](int64_t, int64_t n, const auto& in, const auto& o) {
      gelu_form_chunk(tanh_form, in[0], y, dydx, n);
      const float* g = in[1];
      float* result = o[0];
      for (int64_t i = 0; i < n; ++i) result[i] = g[i] * dydx[i];
    });
  });
  return true;
}

// out = gelu(x [+ bias]) and derivative = gelu'(x [+ bias]) in one pass: what the training
// forward saves so that backward is one multiply (see kernels::GeluWithDerivativeFn).
void gelu_with_derivative_kernel(const Tensor& x, const Tensor& bias, bool tanh_form, const Tensor& out,
                                 const Tensor& derivative) {
  if (bias.defined()) {
    ACCEL_CHECK(x.dtype() == kFloat32 && x.dim() == 2 && x.is_contiguous() && bias.dtype() == kFloat32 &&
                    bias.dim() == 1 && bias.size(0) == x.size(1) && bias.is_contiguous(),
                "gelu_with_derivative: a bias takes a contiguous float32 (rows, cols) input and a (cols) float32 bias, "
                "got ", x.shape_string(), " ", dtype_name(x.dtype()), " and ", bias.shape_string(), " ",
                dtype_name(bias.dtype()));
    const int64_t rows = x.size(0), cols = x.size(1);
    const float* px = x.data_ptr<float>();
    const float* pb = bias.data_ptr<float>();
    float* py = out.data_ptr<float>();
    float* pd = derivative.data_ptr<float>();
    parallel_for(rows, std::max<int64_t>(1, kGrainSize / std::max<int64_t>(cols, 1)), [&](int64_t begin, int64_t end) {
      float biased[kFloatChunk];
      for (int64_t r = begin; r < end; ++r) {
        for (int64_t c0 = 0; c0 < cols; c0 += kFloatChunk) {
          const int64_t n = std::min(kFloatChunk, cols - c0), at = r * cols + c0;
          for (int64_t i = 0; i < n; ++i) biased[i] = px[at + i] + pb[c0 + i];
          gelu_form_chunk(tanh_form, biased, py + at, pd + at, n);
        }
      }
    });
    return;
  }
  if (is_chunkable_float(x.dtype()) && x.is_contiguous() && out.is_contiguous() && derivative.is_contiguous()) {
    parallel_for(x.numel(), kGrainSize, [&](int64_t begin, int64_t end) {
      for_each_float_chunk<1, 2>(begin, end, {&x}, {&out, &derivative},
                                 [&](int64_t, int64_t n, const auto& in, const auto& y_and_d) {
                                   gelu_form_chunk(tanh_form, in[0], y_and_d[0], y_and_d[1], n);
                                 });
    });
    return;
  }
  visit_floating(x.dtype(), "gelu", "cpu", [&]<typename T>() {
    using M = opmath_t<T>;
    map_elementwise<T, T>(out, [&](T v) { return T(tanh_form ? gelu_tanh(M(v)) : gelu_exact(M(v))); }, {&x});
    map_elementwise<T, T>(derivative, [&](T v) { return T(tanh_form ? gelu_tanh_grad(M(v)) : gelu_exact_grad(M(v))); },
                          {&x});
  });
}

// out = a * b with its column sums (kernels::MulColumnSumFn): blocks of kRowBlock rows are
// multiplied and summed in parallel, each into its own double partials, then added in order.
void mul_column_sum_kernel(const Tensor& a, const Tensor& b, const Tensor& out, const Tensor& column_sum) {
  ACCEL_CHECK(a.dim() == 2 && a.is_contiguous() && b.is_contiguous() && out.is_contiguous() && a.sizes() == b.sizes() &&
                  column_sum.dim() == 1 && column_sum.size(0) == a.size(1),
              "mul_column_sum: expected contiguous (rows, cols) operands and a (cols) sum, got ", a.shape_string(), ", ",
              b.shape_string(), " and ", column_sum.shape_string());
  constexpr int64_t kRowBlock = 64;
  const int64_t rows = a.size(0), cols = a.size(1), blocks = (rows + kRowBlock - 1) / kRowBlock;
  visit_floating(a.dtype(), "mul_column_sum", "cpu", [&]<typename T>() {
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      const T* pa = a.data_ptr<T>();
      const T* pb = b.data_ptr<T>();
      T* po = out.data_ptr<T>();
      std::vector<double> partial(static_cast<size_t>(blocks * cols), 0.0);
      parallel_for(blocks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t block = begin; block < end; ++block) {
          double* acc = partial.data() + block * cols;
          for (int64_t r = block * kRowBlock; r < std::min(rows, (block + 1) * kRowBlock); ++r) {
            const T* ar = pa + r * cols;
            const T* br = pb + r * cols;
            T* orow = po + r * cols;
#pragma omp simd
            for (int64_t c = 0; c < cols; ++c) {
              const T v = ar[c] * br[c];
              orow[c] = v;
              acc[c] += double(v);
            }
          }
        }
      });
      T* ps = column_sum.data_ptr<T>();
      for (int64_t c = 0; c < cols; ++c) {
        double total = 0;
        for (int64_t block = 0; block < blocks; ++block) total += partial[block * cols + c];
        ps[c] = T(total);
      }
    } else {
      ACCEL_FAIL("mul_column_sum: takes float32 or float64 on cpu, got ", dtype_name(a.dtype()));
    }
  });
}

void unary_kernel(UnaryOp op, const Tensor& in, const Tensor& out) {
  if (unary_float_fast(op, in, out)) return;
  if (op == UnaryOp::LogicalNot) {
    visit_all(in.dtype(), "logical_not", "cpu", [&]<typename T>() {
      map_elementwise<bool, T>(out, [](T x) { return !static_cast<bool>(opmath_t<T>(x)); }, {&in});
    });
    return;
  }
  visit_numeric(in.dtype(), "unary", "cpu", [&]<typename T>() { unary_typed<T>(op, in, out); });
}

template <typename T>
void binary_typed(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  using M = opmath_t<T>;
  auto arith = [&](auto f) {
    map_elementwise<T, T, T>(out, [&](T x, T y) { return T(f(M(x), M(y))); }, {&a, &b});
  };
  auto compare = [&](auto f) {
    map_elementwise<bool, T, T>(out, [&](T x, T y) { return bool(f(M(x), M(y))); }, {&a, &b});
  };
  switch (op) {
    case BinaryOp::Add: return arith([](M x, M y) { return x + y; });
    case BinaryOp::Sub: return arith([](M x, M y) { return x - y; });
    case BinaryOp::Mul: return arith([](M x, M y) { return x * y; });
    case BinaryOp::Div:
      if constexpr (std::is_integral_v<M>) {
        ACCEL_FAIL("div: integer division is not supported; convert to a floating dtype first");
      } else {
        return arith([](M x, M y) { return x / y; });
      }
    case BinaryOp::Maximum:
      return arith([](M x, M y) { return (x != x || x > y) ? x : y; });  // NaN propagates
    case BinaryOp::Minimum:
      return arith([](M x, M y) { return (x != x || x < y) ? x : y; });
    case BinaryOp::Eq: return compare([](M x, M y) { return x == y; });
    case BinaryOp::Ne: return compare([](M x, M y) { return x != y; });
    case BinaryOp::Lt: return compare([](M x, M y) { return x < y; });
    case BinaryOp::Le: return compare([](M x, M y) { return x <= y; });
    case BinaryOp::Gt: return compare([](M x, M y) { return x > y; });
    case BinaryOp::Ge: return compare([](M x, M y) { return x >= y; });
    case BinaryOp::LogicalAnd: return compare([](M x, M y) { return bool(x) && bool(y); });
    case BinaryOp::LogicalOr: return compare([](M x, M y) { return bool(x) || bool(y); });
    default: break;
  }
  if constexpr (std::is_floating_point_v<M>) {
    switch (op) {
      case BinaryOp::Pow: return arith([](M x, M y) { return std::pow(x, y); });
      case BinaryOp::GeluBackward: return arith([](M g, M x) { return g * gelu_exact_grad(x); });
      case BinaryOp::GeluTanhBackward: return arith([](M g, M x) { return g * gelu_tanh_grad(x); });
      case BinaryOp::TanhBackward: return arith([](M g, M y) { return g * (M(1) - y * y); });
      case BinaryOp::SigmoidBackward: return arith([](M g, M y) { return g * y * (M(1) - y); });
      case BinaryOp::ReluBackward: return arith([](M g, M y) { return y > M(0) ? g : M(0); });
      default: break;
    }
  } else if (op == BinaryOp::Pow) {
    return arith([](M x, M y) {
      M result = 1;
      for (M i = 0; i < y; ++i) result *= x;
      return result;
    });
  }
  ACCEL_FAIL("binary: op ", int(op), " has no kernel for dtype ", dtype_name(a.dtype()), " on cpu");
}

void binary_kernel(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  if (a.dtype() == kBool) {
    map_elementwise<bool, bool, bool>(out, [op](bool x, bool y) {
      switch (op) {
        case BinaryOp::Eq: return x == y;
        case BinaryOp::Ne: return x != y;
        case BinaryOp::LogicalOr: case BinaryOp::Add: case BinaryOp::Maximum: return x || y;
        default: return x && y;  // LogicalAnd, Mul, Minimum
      }
    }, {&a, &b});
    return;
  }
  if (gelu_backward_float_fast(op, a, b, out)) return;
  visit_numeric(a.dtype(), "binary", "cpu", [&]<typename T>() { binary_typed<T>(op, a, b, out); });
}

void add_scaled_kernel(const Tensor& a, const Tensor& b, double alpha, const Tensor& out) {
  visit_numeric(a.dtype(), "add", "cpu", [&]<typename T>() {
    using M = opmath_t<T>;
    M scale = static_cast<M>(alpha);
    map_elementwise<T, T, T>(out, [scale](T x, T y) { return T(M(x) + scale * M(y)); }, {&a, &b});
  });
}

void where_kernel(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) {
  visit_all(a.dtype(), "where", "cpu", [&]<typename T>() {
    map_elementwise<T, bool, T, T>(out, [](bool c, T x, T y) { return c ? x : y; }, {&cond, &a, &b});
  });
}

void clamp_kernel(const Tensor& in, std::optional<double> min, std::optional<double> max, const Tensor& out) {
  visit_numeric(in.dtype(), "clamp", "cpu", [&]<typename T>() {
    using M = opmath_t<T>;
    bool has_min = min.has_value(), has_max = max.has_value();
    M lo = has_min ? static_cast<M>(*min) : M(0);
    M hi = has_max ? static_cast<M>(*max) : M(0);
    map_elementwise<T, T>(out, [=](T v) {
      M x = M(v);
      if (x != x) return v;  // NaN stays NaN, as torch.clamp
      if (has_min && x < lo) x = lo;
      if (has_max && x > hi) x = hi;
      return T(x);
    }, {&in});
  });
}

}  // namespace

ACCEL_REGISTER_KERNEL(unary, DeviceType::CPU, unary_kernel);
ACCEL_REGISTER_KERNEL(binary, DeviceType::CPU, binary_kernel);
ACCEL_REGISTER_KERNEL(gelu_with_derivative, DeviceType::CPU, gelu_with_derivative_kernel);
ACCEL_REGISTER_KERNEL(mul_column_sum, DeviceType::CPU, mul_column_sum_kernel);
ACCEL_REGISTER_KERNEL(add_scaled, DeviceType::CPU, add_scaled_kernel);
ACCEL_REGISTER_KERNEL(where, DeviceType::CPU, where_kernel);
ACCEL_REGISTER_KERNEL(clamp, DeviceType::CPU, clamp_kernel);

}  // namespace accel::cpu
