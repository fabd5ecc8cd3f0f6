// Copies and conversions: contiguous, clone, to(dtype/device), copy_, fill_, zero_, and the
// comparison helpers allclose/equal.
#include <cmath>

#include "core/autograd/derivatives.h"
#include "core/kernels.h"
#include "core/ops/op_utils.h"

namespace accel {

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  Tensor out = Tensor::empty(sizes(), dtype(), device());
  kernels::copy(device(), *this, out);
  autograd::record::identity(out, *this, "ContiguousBackward");
  return out;
}

Tensor Tensor::clone() const {
  Tensor out = Tensor::empty(sizes(), dtype(), device());
  kernels::copy(device(), *this, out);
  autograd::record::identity(out, *this, "CloneBackward");
  return out;
}

Tensor to_dtype(const Tensor& x, DType dtype) {
  if (x.dtype() == dtype) return x;
  Tensor out = Tensor::empty(x.sizes(), dtype, x.device());
  kernels::copy(x.device(), x, out);
  if (x.is_floating_point() && is_floating(dtype)) autograd::record::to_dtype(out, x);
  return out;
}

Tensor to_device(const Tensor& x, Device device) {
  if (x.device() == device) return x;
  Tensor src = x.contiguous();
  Tensor out = Tensor::empty(x.sizes(), x.dtype(), device);
  Device kernel_device = device.is_cpu() ? x.device() : device;  // the non-CPU side does the copy
  kernels::cross_device_copy(kernel_device, src, out);
  autograd::record::to_dtype(out, x);  // the backward moves the gradient back, same dtype
  return out;
}

Tensor Tensor::to(DType dtype) const { return to_dtype(*this, dtype); }
Tensor Tensor::to(Device device) const { return to_device(*this, device); }
Tensor Tensor::to(Device device, DType dtype) const { return to_device(*this, device).to(dtype); }

Tensor& Tensor::copy_(const Tensor& src) {
  detail::check_inplace(*this, "copy_");
  ACCEL_CHECK(src.defined(), "copy_: source is an undefined tensor");
  ACCEL_CHECK(!(GradMode::is_enabled() && src.requires_grad()), "copy_: the source requires grad, and "
              "gradients do not flow through in-place copies; use clone() or an out-of-place op");
  Shape target = sizes();
  broadcast_shapes(target, src.sizes(), "copy_");
  ACCEL_CHECK(src.dim() <= dim(), "copy_: source of shape ", src.shape_string(), " does not broadcast to ",
              shape_string());
  Tensor source = src.device() == device() ? src : src.to(device());
  kernels::copy(device(), source.expand(target), *this);
  storage()->bump_version();
  return *this;
}

Tensor& Tensor::fill_(Scalar value) {
  detail::check_inplace(*this, "fill_");
  kernels::fill(device(), *this, value);
  storage()->bump_version();
  return *this;
}

Tensor& Tensor::zero_() { return fill_(0); }

bool allclose(const Tensor& a, const Tensor& b, double rtol, double atol) {
  if (a.sizes() != b.sizes()) return false;
  std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isnan(x[i]) || std::isnan(y[i])) return false;
    if (std::abs(x[i] - y[i]) > atol + rtol * std::abs(y[i])) return false;
  }
  return true;
}

bool equal(const Tensor& a, const Tensor& b) {
  if (a.sizes() != b.sizes() || a.dtype() != b.dtype()) return false;
  return a.to_vector<double>() == b.to_vector<double>();
}

}  // namespace accel
