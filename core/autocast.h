/// @file
/// Autocast (mixed precision), as torch.autocast: inside an AutocastGuard, matmul and linear
/// cast their inputs to the low-precision dtype (bf16 or fp16; the GEMM accumulates in fp32),
/// while layer_norm, softmax, log_softmax, sum, mean and the losses cast theirs to fp32. Other ops follow
/// type promotion. The casts are recorded ops, so gradients flow back to the fp32 master
/// weights in fp32. Each fp32 leaf (a weight) is cast once per outermost guard and reused.
#pragma once

#include "core/tensor.h"

namespace accel {

class AutocastGuard {
 public:
  /// enabled=false makes a no-op guard (so callers need no branch).
  explicit AutocastGuard(DType low_precision, bool enabled = true);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool previous_enabled_;
  DType previous_dtype_;
};

namespace autocast {
bool is_enabled();
DType low_precision_dtype();
/// For ops that run in low precision: a floating tensor cast to the autocast dtype.
Tensor to_low_precision(const Tensor& t);
/// For ops that run in fp32: a 16-bit floating tensor cast to float32.
Tensor to_full_precision(const Tensor& t);
}  // namespace autocast

}  // namespace accel
