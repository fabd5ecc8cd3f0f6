// Tensor factories: empty/zeros/ones/full, *_like, arange, copies from host data, and random
// tensors from the Philox generator.
#include <cmath>
#include <cstring>

#include "core/kernels.h"
#include "core/ops.h"
#include "core/random.h"

namespace accel {

Tensor empty(const Shape& sizes, TensorOptions options) {
  Tensor t = Tensor::empty(sizes, options.dtype, options.device);
  if (options.requires_grad) t.requires_grad_();
  return t;
}

Tensor full(const Shape& sizes, Scalar value, TensorOptions options) {
  Tensor t = Tensor::empty(sizes, options.dtype, options.device);
  kernels::fill(t.device(), t, value);
  if (options.requires_grad) t.requires_grad_();
  return t;
}

Tensor zeros(const Shape& sizes, TensorOptions options) { return full(sizes, 0, options); }
Tensor ones(const Shape& sizes, TensorOptions options) { return full(sizes, 1, options); }
Tensor empty_like(const Tensor& t) { return Tensor::empty(t.sizes(), t.dtype(), t.device()); }
Tensor zeros_like(const Tensor& t) { return zeros(t.sizes(), {t.dtype(), t.device()}); }
Tensor ones_like(const Tensor& t) { return ones(t.sizes(), {t.dtype(), t.device()}); }
Tensor full_like(const Tensor& t, Scalar value) { return full(t.sizes(), value, {t.dtype(), t.device()}); }

Tensor scalar_tensor(Scalar value, DType dtype, Device device) { return full({}, value, {dtype, device}); }

Tensor arange(Scalar end, std::optional<DType> dtype) { return arange(0, end, 1, dtype); }

Tensor arange(Scalar start, Scalar end, Scalar step, std::optional<DType> dtype) {
  double s = start.to_double(), e = end.to_double(), st = step.to_double();
  ACCEL_CHECK(st != 0, "arange: step must be nonzero");
  ACCEL_CHECK((st > 0 && e >= s) || (st < 0 && e <= s), "arange: the range [", s, ", ", e,
              ") is not reachable with step ", st);
  bool integral = !start.is_floating() && !end.is_floating() && !step.is_floating();
  DType out_dtype = dtype.value_or(integral ? kInt64 : kFloat32);
  int64_t n = static_cast<int64_t>(std::ceil((e - s) / st));
  Tensor t = Tensor::empty({n}, out_dtype);
  kernels::arange(t.device(), t, s, st);
  return t;
}

template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& sizes, std::optional<DType> dtype) {
  ACCEL_CHECK(shape_numel(sizes) == static_cast<int64_t>(values.size()), "from_vector: ", values.size(),
              " values do not fill shape ", shape_str(sizes), " (", shape_numel(sizes), " elements)");
  Tensor t = Tensor::empty(sizes, dtype_of<T>);
  if (!values.empty()) {
    if constexpr (std::is_same_v<T, bool>) {
      bool* out = t.data_ptr<bool>();
      for (size_t i = 0; i < values.size(); ++i) out[i] = values[i];
    } else {
      std::memcpy(t.data_ptr(), values.data(), values.size() * sizeof(T));
    }
  }
  return dtype && *dtype != t.dtype() ? t.to(*dtype) : t;
}
template Tensor from_vector(const std::vector<float>&, const Shape&, std::optional<DType>);
template Tensor from_vector(const std::vector<double>&, const Shape&, std::optional<DType>);
template Tensor from_vector(const std::vector<int64_t>&, const Shape&, std::optional<DType>);
template Tensor from_vector(const std::vector<int32_t>&, const Shape&, std::optional<DType>);
template Tensor from_vector(const std::vector<bool>&, const Shape&, std::optional<DType>);
template Tensor from_vector(const std::vector<Half>&, const Shape&, std::optional<DType>);
template Tensor from_vector(const std::vector<BFloat16>&, const Shape&, std::optional<DType>);

Tensor from_blob_copy(const void* data, const Shape& sizes, DType dtype) {
  Tensor t = Tensor::empty(sizes, dtype);
  if (t.nbytes() > 0) std::memcpy(t.data_ptr(), data, t.nbytes());
  return t;
}

// ---- random ----

Generator& default_generator() {
  static Generator generator;
  return generator;
}

void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

namespace {
Tensor random_tensor(const Shape& sizes, TensorOptions options, Generator* generator, RandomKind kind,
                     double a, double b, const char* op) {
  ACCEL_CHECK(is_floating(options.dtype), op, ": expected a floating dtype but got ", dtype_name(options.dtype));
  Generator& gen = generator ? *generator : default_generator();
  Tensor t = Tensor::empty(sizes, options.dtype, options.device);
  uint64_t n = static_cast<uint64_t>(t.numel());
  uint64_t offset = gen.reserve(kind == RandomKind::Normal ? (n + 1) / 2 * 2 : n);
  kernels::random(t.device(), t, kind, gen.seed(), offset, a, b);
  if (options.requires_grad) t.requires_grad_();
  return t;
}
}  // namespace

Tensor rand(const Shape& sizes, TensorOptions options, Generator* generator) {
  return random_tensor(sizes, options, generator, RandomKind::Uniform, 0.0, 1.0, "rand");
}

Tensor randn(const Shape& sizes, TensorOptions options, Generator* generator) {
  return random_tensor(sizes, options, generator, RandomKind::Normal, 0.0, 1.0, "randn");
}

Tensor randint(int64_t low, int64_t high, const Shape& sizes, TensorOptions options, Generator* generator) {
  ACCEL_CHECK(high > low, "randint: expected low < high but got low=", low, ", high=", high);
  ACCEL_CHECK(high - low <= (int64_t(1) << 24), "randint: ranges above 2^24 values are not supported "
              "(got ", high - low, ")");
  // Uniform 24-bit draws scaled to the range: floor(u * range) is exact in double.
  Tensor u = random_tensor(sizes, {kFloat64, kCPU}, generator, RandomKind::Uniform, 0.0,
                           static_cast<double>(high - low), "randint");
  double* p = u.data_ptr<double>();
  for (int64_t i = 0; i < u.numel(); ++i) p[i] = std::floor(p[i]) + static_cast<double>(low);
  return u.to(options.device, options.dtype);
}

}  // namespace accel
