// CPU optimizer kernels: one fused pass of AdamW per parameter tensor, instead of the six
// elementwise passes the update takes written with tensor ops.
#include <cmath>

#include "core/kernels.h"
#include "core/parallel.h"

namespace accel::cpu {

namespace {

void adamw_kernel(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                  const kernels::AdamWHyper& h) {
  visit_floating(param.dtype(), "adamw", "cpu", [&]<typename T>() {
    using M = opmath_t<T>;
    T* p = param.data_ptr<T>();
    T* m = exp_avg.data_ptr<T>();
    T* v = exp_avg_sq.data_ptr<T>();
    const T* g = grad.data_ptr<T>();
    const M b1 = M(h.beta1), b2 = M(h.beta2), eps = M(h.eps);
    const M decay = M(1.0 - h.lr * h.weight_decay);
    const M step_size = M(h.lr / (1.0 - std::pow(h.beta1, double(h.step))));
    const M sqrt_bias2 = M(std::sqrt(1.0 - std::pow(h.beta2, double(h.step))));
    parallel_for(param.numel(), 16384, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        M gi = M(g[i]);
        M mi = b1 * M(m[i]) + (M(1) - b1) * gi;
        M vi = b2 * M(v[i]) + (M(1) - b2) * gi * gi;
        M denom = std::sqrt(vi) / sqrt_bias2 + eps;  // the order of operations torch.optim.AdamW uses
        p[i] = T(M(p[i]) * decay - step_size * mi / denom);
        m[i] = T(mi);
        v[i] = T(vi);
      }
    });
  });
}

}  // namespace

ACCEL_REGISTER_KERNEL(adamw, DeviceType::CPU, adamw_kernel);

}  // namespace accel::cpu
