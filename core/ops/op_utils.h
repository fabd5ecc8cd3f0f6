/// @file
/// Argument checks shared by the op implementations in core/ops/.
#pragma once

#include <initializer_list>

#include "core/autograd/grad_mode.h"
#include "core/tensor.h"

namespace accel::detail {

inline void check_defined(const Tensor& t, const char* op, const char* what) {
  ACCEL_CHECK(t.defined(), op, ": ", what, " is an undefined tensor");
}

/// All tensors on one device; returns it.
inline Device common_device(const char* op, std::initializer_list<const Tensor*> tensors) {
  const Tensor* first = nullptr;
  for (const Tensor* t : tensors) {
    if (t == nullptr || !t->defined()) continue;
    if (first == nullptr) {
      first = t;
      continue;
    }
    ACCEL_CHECK(t->device() == first->device(), op, ": expected all tensors on one device, but found ",
                first->device().str(), " and ", t->device().str());
  }
  ACCEL_CHECK(first != nullptr, op, ": no defined tensor argument");
  return first->device();
}

/// In-place writes are refused on tensors that autograd tracks (the gradient would be wrong)
/// unless recording is off (an optimizer step under NoGradGuard). They bump the version.
inline void check_inplace(const Tensor& t, const char* op) {
  ACCEL_CHECK(!(GradMode::is_enabled() && t.requires_grad()), op, ": in-place operation on a tensor "
              "of shape ", t.shape_string(), " that requires grad", t.is_leaf() ? " (a leaf)" : "",
              "; use the out-of-place form, or wrap the update in NoGradGuard if it is not part of the model");
}

inline void check_floating(const Tensor& t, const char* op) {
  ACCEL_CHECK(t.is_floating_point(), op, ": expected a floating-point tensor but got dtype ",
              dtype_name(t.dtype()), " (shape ", t.shape_string(), ")");
}

inline void check_index_dtype(const Tensor& index, const char* op) {
  ACCEL_CHECK(index.dtype() == kInt64 || index.dtype() == kInt32, op, ": expected an int64 or int32 index "
              "tensor but got dtype ", dtype_name(index.dtype()), " (shape ", index.shape_string(), ")");
}

/// Every index value lies in [0, size); the error names the first one that does not.
void check_index_range(const Tensor& index, int64_t size, const char* op, const char* what);

}  // namespace accel::detail
