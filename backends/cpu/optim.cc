// CPU optimizer kernels: one fused pass of AdamW per parameter tensor, instead of the six
// elementwise passes the update takes written with tensor ops, and the same pass over many
// tensors at once (adamw_multi_tensor), one parallel loop for all of them. Both run
// adamw_span below, so their results are equal bit for bit. It vectorizes (vsqrtps, vdivps
// under AVX): CMakeLists.txt compiles this file with -fno-math-errno, without which GCC keeps
// std::sqrt a scalar call so that it could set errno for a negative input (never the case
// here: v is a sum of squares).
#include <cmath>

#include "backends/cpu/concatenation.h"
#include "core/kernels.h"
#include "core/parallel.h"

namespace accel::cpu {

namespace {

// The hyperparameters as the update uses them, rounded once to the compute type.
template <typename M>
struct AdamWConstants {
  M beta1, beta2, eps, decay, step_size, sqrt_bias2;
  explicit AdamWConstants(const kernels::AdamWHyper& h)
      : beta1(M(h.beta1)),
        beta2(M(h.beta2)),
        eps(M(h.eps)),
        decay(M(1.0 - h.lr * h.weight_decay)),
        step_size(M(h.lr / (1.0 - std::pow(h.beta1, double(h.step))))),
        sqrt_bias2(M(std::sqrt(1.0 - std::pow(h.beta2, double(h.step))))) {}
};

// AdamW over elements [begin, end) of one tensor set, in place.
template <typename T>
void adamw_span(T* __restrict p, const T* __restrict g, T* __restrict m, T* __restrict v, int64_t begin, int64_t end,
                const AdamWConstants<opmath_t<T>>& k) {
  using M = opmath_t<T>;
  for (int64_t i = begin; i < end; ++i) {
    M gi = M(g[i]);
    M mi = k.beta1 * M(m[i]) + (M(1) - k.beta1) * gi;
    M vi = k.beta2 * M(v[i]) + (M(1) - k.beta2) * gi * gi;
    M denom = std::sqrt(vi) / k.sqrt_bias2 + k.eps;  // the order of operations torch.optim.AdamW uses
    p[i] = T(M(p[i]) * k.decay - k.step_size * mi / denom);
    m[i] = T(mi);
    v[i] = T(vi);
  }
}

void adamw_kernel(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                  const kernels::AdamWHyper& h) {
  visit_floating(param.dtype(), "adamw", "cpu", [&]<typename T>() {
    const AdamWConstants<opmath_t<T>> k(h);
    T* p = param.data_ptr<T>();
    T* m = exp_avg.data_ptr<T>();
    T* v = exp_avg_sq.data_ptr<T>();
    const T* g = grad.data_ptr<T>();
    parallel_for(param.numel(), 16384, [&](int64_t begin, int64_t end) { adamw_span(p, g, m, v, begin, end, k); });
  });
}

// All tensor sets laid end to end as one range of elements (concatenation.h), split evenly
// among the threads of a single parallel loop; each thread walks its part tensor by tensor.
void adamw_multi_tensor_kernel(const std::vector<kernels::AdamWTensors>& tensors, const kernels::AdamWHyper& h) {
  if (tensors.empty()) return;
  visit_floating(tensors.front().param.dtype(), "adamw_multi_tensor", "cpu", [&]<typename T>() {
    const AdamWConstants<opmath_t<T>> k(h);
    const std::vector<int64_t> starts =
        concatenation_starts(tensors, [](const kernels::AdamWTensors& set) { return set.param.numel(); });
    parallel_for(starts.back(), 16384, [&](int64_t begin, int64_t end) {
      for_each_piece(starts, begin, end, [&](size_t i, int64_t first, int64_t last) {
        const kernels::AdamWTensors& set = tensors[i];
        adamw_span(set.param.data_ptr<T>(), set.grad.data_ptr<T>(), set.exp_avg.data_ptr<T>(),
                   set.exp_avg_sq.data_ptr<T>(), first, last, k);
      });
    });
  });
}

}  // namespace

ACCEL_REGISTER_KERNEL(adamw, DeviceType::CPU, adamw_kernel);
ACCEL_REGISTER_KERNEL(adamw_multi_tensor, DeviceType::CPU, adamw_multi_tensor_kernel);

}  // namespace accel::cpu
