// CUDA fused cross-entropy over the rows of (rows, C) logits, forward and backward, the
// arithmetic of backends/cpu/cross_entropy.cc. Forward: one block per row, the row max and
// then sum exp(x - max) (and, for label smoothing, sum (x - max)) combined with warp shuffles,
// statistics in float (double for float64); thread 0 writes the row's loss and log-sum-exp.
// Backward: one block per row, each thread writing its columns of softmax - smoothed one-hot
// from the saved log-sum-exp, no reduction needed. An ignored row is skipped by the whole
// block (every thread reads the same target, so the branch is uniform).
#include <cmath>

#include "backends/cuda/device_utils.cuh"
#include "backends/cuda/math.cuh"
#include "core/kernels.h"

namespace accel::cuda {

namespace {

template <typename T>
using stat_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <typename T>
__global__ void cross_entropy_kernel_device(const T* x, const int64_t* target, int64_t ignore_index,
                                            stat_t<T> smoothing, stat_t<T> per_class, stat_t<T>* losses,
                                            stat_t<T>* logsumexp, int64_t rows, int64_t C) {
  using M = stat_t<T>;
  __shared__ M shared[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t t = target[r];
    if (t == ignore_index) {
      if (threadIdx.x == 0) {
        losses[r] = 0;
        logsumexp[r] = 0;
      }
      continue;
    }
    const T* xr = x + r * C;
    M max_value = -INFINITY;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) max_value = fmax(max_value, M(load_compute(xr[c])));
    max_value = block_reduce(max_value, MaxOp{}, M(-INFINITY), shared);
    if (isinf(max_value) && max_value < 0) max_value = 0;  // all -inf: avoid NaN from inf - inf
    M sum_exp = 0, sum_shifted = 0;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      const M shifted = M(load_compute(xr[c])) - max_value;
      sum_exp += dexp(shifted);
      sum_shifted += shifted;
    }
    sum_exp = block_reduce(sum_exp, SumOp{}, M(0), shared);
    if (smoothing != M(0)) sum_shifted = block_reduce(sum_shifted, SumOp{}, M(0), shared);
    if (threadIdx.x == 0) {
      const M log_sum = dlog(sum_exp), lse = max_value + log_sum;
      M loss = lse - M(load_compute(xr[t]));  // -log p_t
      // sum_c -log p_c = C log_sum - sum_c (x_c - max), non-negative terms only.
      if (smoothing != M(0)) loss = (M(1) - smoothing) * loss + per_class * (M(C) * log_sum - sum_shifted);
      losses[r] = loss;
      logsumexp[r] = lse;
    }
  }
}

template <typename T>
__global__ void cross_entropy_backward_kernel_device(const stat_t<T>* grad_losses, bool per_row, stat_t<T> scale,
                                                     const T* x, const int64_t* target, const stat_t<T>* logsumexp,
                                                     int64_t ignore_index, stat_t<T> per_class,
                                                     stat_t<T> target_weight, T* dx, int64_t rows, int64_t C) {
  using M = stat_t<T>;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t t = target[r];
    T* dr = dx + r * C;
    if (t == ignore_index) {
      for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dr[c] = store_compute<T>(M(0));
      continue;
    }
    const T* xr = x + r * C;
    const M row_grad = grad_losses[per_row ? r : 0] * scale, lse = logsumexp[r];
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      const M p = dexp(M(load_compute(xr[c])) - lse);
      dr[c] = store_compute<T>(row_grad * (p - per_class - (c == t ? target_weight : M(0))));
    }
  }
}

void cross_entropy_kernel(const Tensor& logits, const Tensor& target, int64_t ignore_index, double label_smoothing,
                          const Tensor& losses, const Tensor& logsumexp) {
  const int64_t rows = logits.size(0), C = logits.size(1);
  if (rows == 0) return;
  visit_floating_device(logits.dtype(), "cross_entropy", [&]<typename T>() {
    using M = stat_t<T>;
    KernelContext context(logits);
    const M per_class = C > 0 ? M(label_smoothing / double(C)) : M(0);
    cross_entropy_kernel_device<T><<<row_blocks(rows), threads_per_row(C), 0, context.stream>>>(
        device_ptr<const T>(logits), device_ptr<const int64_t>(target), ignore_index, M(label_smoothing), per_class,
        device_ptr<M>(losses), device_ptr<M>(logsumexp), rows, C);
    ACCEL_CUDA_CHECK_LAUNCH();
  });
}

void cross_entropy_backward_kernel(const Tensor& grad_losses, double scale, const Tensor& logits,
                                   const Tensor& target, const Tensor& logsumexp, int64_t ignore_index,
                                   double label_smoothing, const Tensor& grad_logits) {
  const int64_t rows = logits.size(0), C = logits.size(1);
  if (rows == 0 || C == 0) return;
  visit_floating_device(logits.dtype(), "cross_entropy_backward", [&]<typename T>() {
    using M = stat_t<T>;
    KernelContext context(logits);
    cross_entropy_backward_kernel_device<T><<<row_blocks(rows), threads_per_row(C), 0, context.stream>>>(
        device_ptr<const M>(grad_losses), grad_losses.numel() != 1, M(scale), device_ptr<const T>(logits),
        device_ptr<const int64_t>(target), device_ptr<const M>(logsumexp), ignore_index,
        M(label_smoothing / double(C)), M(1.0 - label_smoothing), device_ptr<T>(grad_logits), rows, C);
    ACCEL_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

ACCEL_REGISTER_KERNEL(cross_entropy, DeviceType::CUDA, cross_entropy_kernel);
ACCEL_REGISTER_KERNEL(cross_entropy_backward, DeviceType::CUDA, cross_entropy_backward_kernel);

}  // namespace accel::cuda
