/// @file
/// Autocast (mixed precision), as torch.autocast: inside an AutocastGuard, matmul and linear
/// cast their inputs to the low-precision dtype (bf16 or fp16; the GEMM accumulates in fp32),
/// while layer_norm, softmax, log_softmax, sum, mean and the losses cast theirs to fp32. Other ops follow
/// type promotion. The casts are recorded ops, so gradients flow back to the fp32 master
/// weights in fp32. Each fp32 leaf that requires grad (a weight) is cast once per outermost guard
/// and reused. Under no-grad (inference) its 16-bit copy is kept across guards while the weight is
/// unchanged (same storage and version), so repeated inference casts each weight once; the copies
/// take half the fp32 weights' bytes until the weight changes or dies, a recording cast of it is
/// made, or autocast::clear_cache() runs. torch.autocast recasts on every region.
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
/// Frees this thread's 16-bit weight copies kept for inference.
void clear_cache();
}  // namespace autocast

}  // namespace accel
