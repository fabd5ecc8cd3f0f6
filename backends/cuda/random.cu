// CUDA random fills and dropout from the Philox stream of core/random.h: thread j computes
// Philox block (offset + j) and writes elements 4j..4j+3 exactly as backends/cpu/random.cc
// does (same 24-bit uniforms, Box-Muller in double), so a seed gives the same tensor on
// both backends and dropout drops the same elements.
#include <cmath>

#include "backends/cuda/device_utils.cuh"
#include "core/kernels.h"

namespace accel::cuda {

namespace {

template <typename T>
__global__ void uniform_kernel(T* out, int64_t n, uint64_t seed, uint64_t offset, double a, double b) {
  const int64_t blocks = (n + 3) / 4;
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < blocks; j += int64_t(gridDim.x) * blockDim.x) {
    const uint4 w = philox_block_device(seed, offset + j);
    for (int lane = 0; lane < 4 && 4 * j + lane < n; ++lane) {
      const double u = philox_uniform_device(philox_word(w, lane));
      out[4 * j + lane] = store_compute<T>(static_cast<compute_t<T>>(a + (b - a) * u));
    }
  }
}

// Pairs (2m, 2m+1) share one Box-Muller transform; a block holds two pairs.
template <typename T>
__global__ void normal_kernel(T* out, int64_t n, uint64_t seed, uint64_t offset, double mean, double std) {
  constexpr double kTwoPi = 6.283185307179586476925;
  const int64_t blocks = (n + 3) / 4;
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < blocks; j += int64_t(gridDim.x) * blockDim.x) {
    const uint4 w = philox_block_device(seed, offset + j);
    for (int pair = 0; pair < 2; ++pair) {
      const double u1 = 1.0 - double(philox_uniform_device(philox_word(w, 2 * pair)));
      const double u2 = philox_uniform_device(philox_word(w, 2 * pair + 1));
      const double radius = sqrt(-2.0 * log(u1));
      const double z[2] = {radius * cos(kTwoPi * u2), radius * sin(kTwoPi * u2)};
      for (int k = 0; k < 2; ++k) {
        const int64_t i = 4 * j + 2 * pair + k;
        if (i < n) out[i] = store_compute<T>(static_cast<compute_t<T>>(mean + std * z[k]));
      }
    }
  }
}

void random_kernel(const Tensor& dst, RandomKind kind, uint64_t seed, uint64_t offset, double a, double b) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  visit_floating_device(dst.dtype(), "random", [&]<typename T>() {
    KernelContext context(dst);
    const unsigned grid = grid_for((n + 3) / 4);
    if (kind == RandomKind::Uniform) {
      uniform_kernel<T><<<grid, kBlockSize, 0, context.stream>>>(device_ptr<T>(dst), n, seed, offset, a, b);
    } else {
      normal_kernel<T><<<grid, kBlockSize, 0, context.stream>>>(device_ptr<T>(dst), n, seed, offset, a, b);
    }
    ACCEL_CUDA_CHECK_LAUNCH();
  });
}
// [snippet:dropout]
template <typename T>
__global__ void dropout_kernel_device(const T* x, T* out, bool* keep, int64_t n, float threshold,
                                      compute_t<T> scale, uint64_t seed, uint64_t offset) {
  const int64_t blocks = (n + 3) / 4;
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < blocks; j += int64_t(gridDim.x) * blockDim.x) {
    const uint4 w = philox_block_device(seed, offset + j);
    for (int lane = 0; lane < 4 && 4 * j + lane < n; ++lane) {
      const int64_t i = 4 * j + lane;
      const bool k = philox_uniform_device(philox_word(w, lane)) >= threshold;
      keep[i] = k;
      out[i] = k ? store_compute<T>(load_compute(x[i]) * scale) : store_compute<T>(compute_t<T>(0));
    }
  }
}
// [end]
void dropout_kernel(const Tensor& x, double p, uint64_t seed, uint64_t offset, const Tensor& out, const Tensor& mask) {
  const int64_t n = x.numel();
  if (n == 0) return;
  visit_floating_device(x.dtype(), "dropout", [&]<typename T>() {
    KernelContext context(x);
    dropout_kernel_device<T><<<grid_for((n + 3) / 4), kBlockSize, 0, context.stream>>>(
        device_ptr<const T>(x), device_ptr<T>(out), device_ptr<bool>(mask), n, static_cast<float>(p),
        static_cast<compute_t<T>>(1.0 / (1.0 - p)), seed, offset);
    ACCEL_CUDA_CHECK_LAUNCH();
  });
}

template <typename T>
__global__ void dropout_backward_kernel_device(const T* grad, const bool* keep, compute_t<T> scale, T* out, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = keep[i] ? store_compute<T>(load_compute(grad[i]) * scale) : store_compute<T>(compute_t<T>(0));
  }
}

void dropout_backward_kernel(const Tensor& grad, const Tensor& mask, double scale, const Tensor& grad_in) {
  const int64_t n = grad.numel();
  if (n == 0) return;
  visit_floating_device(grad.dtype(), "dropout_backward", [&]<typename T>() {
    KernelContext context(grad);
    dropout_backward_kernel_device<T><<<grid_for(n), kBlockSize, 0, context.stream>>>(
        device_ptr<const T>(grad), device_ptr<const bool>(mask), static_cast<compute_t<T>>(scale),
        device_ptr<T>(grad_in), n);
    ACCEL_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

ACCEL_REGISTER_KERNEL(random, DeviceType::CUDA, random_kernel);
ACCEL_REGISTER_KERNEL(dropout, DeviceType::CUDA, dropout_kernel);
ACCEL_REGISTER_KERNEL(dropout_backward, DeviceType::CUDA, dropout_backward_kernel);

}  // namespace accel::cuda
