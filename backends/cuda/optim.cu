// CUDA optimizer kernel: one fused AdamW pass per parameter tensor (PyTorch semantics, the
// order of operations of backends/cpu/optim.cc), over fp32 masters or any floating dtype.
#include <cmath>

#include "backends/cuda/device_utils.cuh"
#include "backends/cuda/math.cuh"
#include "core/kernels.h"

namespace accel::cuda {

namespace {

template <typename T>
struct AdamWConstants {
  compute_t<T> beta1, beta2, eps, decay, step_size, sqrt_bias2;
};

template <typename T>
__global__ void adamw_kernel_device(T* p, const T* g, T* m, T* v, int64_t n, AdamWConstants<T> k) {
  using M = compute_t<T>;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const M gi = load_compute(g[i]);
    const M mi = k.beta1 * load_compute(m[i]) + (M(1) - k.beta1) * gi;
    const M vi = k.beta2 * load_compute(v[i]) + (M(1) - k.beta2) * gi * gi;
    const M denom = dsqrt(vi) / k.sqrt_bias2 + k.eps;
    p[i] = store_compute<T>(load_compute(p[i]) * k.decay - k.step_size * mi / denom);
    m[i] = store_compute<T>(mi);
    v[i] = store_compute<T>(vi);
  }
}

void adamw_kernel(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                  const kernels::AdamWHyper& h) {
  const int64_t n = param.numel();
  if (n == 0) return;
  visit_floating_device(param.dtype(), "adamw", [&]<typename T>() {
    using M = compute_t<T>;
    AdamWConstants<T> k{M(h.beta1), M(h.beta2), M(h.eps), M(1.0 - h.lr * h.weight_decay),
                        M(h.lr / (1.0 - std::pow(h.beta1, double(h.step)))),
                        M(std::sqrt(1.0 - std::pow(h.beta2, double(h.step))))};
    KernelContext context(param);
    adamw_kernel_device<T><<<grid_for(n), kBlockSize, 0, context.stream>>>(
        device_ptr<T>(param), device_ptr<const T>(grad), device_ptr<T>(exp_avg), device_ptr<T>(exp_avg_sq), n, k);
    ACCEL_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

ACCEL_REGISTER_KERNEL(adamw, DeviceType::CUDA, adamw_kernel);

}  // namespace accel::cuda
