// Tensor methods that forward to the free functions of core/ops.h.
#include "core/ops.h"

namespace accel {

Tensor Tensor::add(const Tensor& other, Scalar alpha) const { return accel::add(*this, other, alpha); }
Tensor Tensor::sub(const Tensor& other, Scalar alpha) const { return accel::sub(*this, other, alpha); }
Tensor Tensor::mul(const Tensor& other) const { return accel::mul(*this, other); }
Tensor Tensor::div(const Tensor& other) const { return accel::div(*this, other); }
Tensor Tensor::pow(const Tensor& exponent) const { return accel::pow(*this, exponent); }
Tensor Tensor::pow(Scalar exponent) const { return accel::pow(*this, exponent); }
Tensor Tensor::neg() const { return accel::neg(*this); }
Tensor Tensor::abs() const { return accel::abs(*this); }
Tensor Tensor::exp() const { return accel::exp(*this); }
Tensor Tensor::log() const { return accel::log(*this); }
Tensor Tensor::sqrt() const { return accel::sqrt(*this); }
Tensor Tensor::rsqrt() const { return accel::rsqrt(*this); }
Tensor Tensor::tanh() const { return accel::tanh(*this); }
Tensor Tensor::sigmoid() const { return accel::sigmoid(*this); }
Tensor Tensor::relu() const { return accel::relu(*this); }
Tensor Tensor::erf() const { return accel::erf(*this); }
Tensor Tensor::clamp(std::optional<Scalar> min, std::optional<Scalar> max) const { return accel::clamp(*this, min, max); }
Tensor Tensor::masked_fill(const Tensor& mask, Scalar value) const { return accel::masked_fill(*this, mask, value); }
Tensor Tensor::sum() const { return accel::sum(*this); }
Tensor Tensor::sum(const Shape& dims, bool keepdim) const { return accel::sum(*this, dims, keepdim); }
Tensor Tensor::mean() const { return accel::mean(*this); }
Tensor Tensor::mean(const Shape& dims, bool keepdim) const { return accel::mean(*this, dims, keepdim); }
Tensor Tensor::max() const { return accel::max(*this); }
Tensor Tensor::min() const { return accel::min(*this); }
Tensor Tensor::argmax(std::optional<int64_t> dim, bool keepdim) const { return accel::argmax(*this, dim, keepdim); }
Tensor Tensor::var(const Shape& dims, int64_t correction, bool keepdim) const {
  return accel::var(*this, dims, correction, keepdim);
}
Tensor Tensor::std(const Shape& dims, int64_t correction, bool keepdim) const {
  return accel::std(*this, dims, correction, keepdim);
}
Tensor Tensor::matmul(const Tensor& other) const { return accel::matmul(*this, other); }
Tensor Tensor::softmax(int64_t dim) const { return accel::softmax(*this, dim); }
Tensor Tensor::log_softmax(int64_t dim) const { return accel::log_softmax(*this, dim); }
Tensor Tensor::index_select(int64_t dim, const Tensor& index) const { return accel::index_select(*this, dim, index); }
Tensor Tensor::gather(int64_t dim, const Tensor& index) const { return accel::gather(*this, dim, index); }

}  // namespace accel
