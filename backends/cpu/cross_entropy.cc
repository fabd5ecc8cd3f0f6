// CPU fused cross-entropy over the rows of (rows, C) logits, forward and backward: the row's
// log-sum-exp around its max, the loss with label smoothing, and the gradient
// softmax - smoothed one-hot, without materializing log_softmax. Rows run in parallel; 16-bit
// logits are read into float, so statistics are float (double for float64). Ignored rows
// cost nothing: their loss and gradient are 0 and their logits are never read.
#include <cmath>
#include <vector>

#include "backends/cpu/vec_math.h"
#include "core/kernels.h"
#include "core/parallel.h"

namespace accel::cpu {

namespace {

// exp over n values in place: libmvec for float, std::exp for double.
template <typename M>
void exp_in_place(M* values, int64_t n) {
  if constexpr (std::is_same_v<M, float>) {
    vec::exp(values, values, n);
  } else {
    for (int64_t i = 0; i < n; ++i) values[i] = std::exp(values[i]);
  }
}

// Rows per parallel chunk: about 16k logits of work, as the softmax kernels take.
int64_t rows_grain(int64_t C) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(C, 1)); }

void cross_entropy_kernel(const Tensor& logits, const Tensor& target, int64_t ignore_index, double label_smoothing,
                          const Tensor& losses, const Tensor& logsumexp) {
  const int64_t rows = logits.size(0), C = logits.size(1);
  visit_floating(logits.dtype(), "cross_entropy", "cpu", [&]<typename T>() {
    using M = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const T* x = logits.data_ptr<T>();
    const int64_t* t = target.data_ptr<int64_t>();
    M* loss_out = losses.data_ptr<M>();
    M* lse_out = logsumexp.data_ptr<M>();
    const M smoothing = M(label_smoothing), per_class = C > 0 ? M(label_smoothing / double(C)) : M(0);
    parallel_for(rows, rows_grain(C), [&](int64_t begin, int64_t end) {
      std::vector<M> shifted(C);  // (C) x - max, then exp(x - max)
      for (int64_t r = begin; r < end; ++r) {
        if (t[r] == ignore_index) {
          loss_out[r] = 0;
          lse_out[r] = 0;
          continue;
        }
        const T* xr = x + r * C;
        M max_value = -INFINITY;
        for (int64_t c = 0; c < C; ++c) {
          shifted[c] = M(xr[c]);
          max_value = std::max(max_value, shifted[c]);
        }
        if (std::isinf(max_value) && max_value < 0) max_value = 0;  // all -inf: avoid NaN from inf - inf
        M sum_shifted = 0;  // sum_c (x_c - max) <= 0, for the smoothing term
        for (int64_t c = 0; c < C; ++c) {
          shifted[c] -= max_value;
          sum_shifted += shifted[c];
        }
        exp_in_place(shifted.data(), C);
        M sum_exp = 0;
        for (int64_t c = 0; c < C; ++c) sum_exp += shifted[c];
        const M log_sum = std::log(sum_exp), lse = max_value + log_sum;
        M loss = lse - M(xr[t[r]]);  // -log p_t
        if (label_smoothing != 0.0) {
          // sum_c -log p_c = C lse - sum_c x_c = C log_sum - sum_c (x_c - max): a sum of
          // non-negative terms, so no cancellation between two large numbers.
          loss = (M(1) - smoothing) * loss + per_class * (M(C) * log_sum - sum_shifted);
        }
        loss_out[r] = loss;
        lse_out[r] = lse;
      }
    });
  });
}

void cross_entropy_backward_kernel(const Tensor& grad_losses, double scale, const Tensor& logits,
                                   const Tensor& target, const Tensor& logsumexp, int64_t ignore_index,
                                   double label_smoothing, const Tensor& grad_logits) {
  const int64_t rows = logits.size(0), C = logits.size(1);
  visit_floating(logits.dtype(), "cross_entropy_backward", "cpu", [&]<typename T>() {
    using M = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const T* x = logits.data_ptr<T>();
    const int64_t* t = target.data_ptr<int64_t>();
    const M* g = grad_losses.data_ptr<M>();
    const M* lse = logsumexp.data_ptr<M>();
    T* dx = grad_logits.data_ptr<T>();
    const bool per_row = grad_losses.numel() != 1;
    const M per_class = C > 0 ? M(label_smoothing / double(C)) : M(0), target_weight = M(1.0 - label_smoothing);
    parallel_for(rows, rows_grain(C), [&](int64_t begin, int64_t end) {
      std::vector<M> probs(C);  // (C) exp(x - lse)
      for (int64_t r = begin; r < end; ++r) {
        T* dr = dx + r * C;
        if (t[r] == ignore_index) {
          for (int64_t c = 0; c < C; ++c) dr[c] = T(M(0));
          continue;
        }
        const T* xr = x + r * C;
        const M row_grad = g[per_row ? r : 0] * M(scale);
        for (int64_t c = 0; c < C; ++c) probs[c] = M(xr[c]) - lse[r];
        exp_in_place(probs.data(), C);
        for (int64_t c = 0; c < C; ++c) dr[c] = T(row_grad * (probs[c] - per_class));
        dr[t[r]] = T(row_grad * (probs[t[r]] - per_class - target_weight));
      }
    });
  });
}

}  // namespace

ACCEL_REGISTER_KERNEL(cross_entropy, DeviceType::CPU, cross_entropy_kernel);
ACCEL_REGISTER_KERNEL(cross_entropy_backward, DeviceType::CPU, cross_entropy_backward_kernel);

}  // namespace accel::cpu
