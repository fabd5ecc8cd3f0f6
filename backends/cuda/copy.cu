// CUDA copies and fills: strided copy with dtype conversion (copy_, contiguous(), to(dtype)
// on the device), fill with a scalar, arange. Same-dtype contiguous copies are one
// cudaMemcpyAsync; conversions follow the CPU's rules (device_utils.cuh's convert).
#include <cstring>

#include "backends/cuda/elementwise.cuh"
#include "core/kernels.h"

namespace accel::cuda {

namespace {

template <typename To, typename From>
struct ConvertFunctor {
  __device__ To operator()(From v) const { return convert<To, From>(v); }
};

void copy_kernel(const Tensor& src, const Tensor& dst) {
  if (dst.numel() == 0) return;
  if (src.dtype() == dst.dtype() && src.is_contiguous() && dst.is_contiguous()) {
    if (src.data_ptr() == dst.data_ptr()) return;
    KernelContext context(dst);
    ACCEL_CUDA_CHECK(cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(), dst.nbytes(), cudaMemcpyDeviceToDevice,
                                     context.stream));
    return;
  }
  visit_all_device(dst.dtype(), "copy", [&]<typename To>() {
    visit_all_device(src.dtype(), "copy", [&]<typename From>() {
      launch_elementwise<To, From>(dst, ConvertFunctor<To, From>{}, {&src});
    });
  });
}

template <typename T>
struct FillFunctor {
  T value;
  __device__ T operator()() const { return value; }
};

void fill_kernel(const Tensor& dst, Scalar value) {
  visit_all(dst.dtype(), "fill", "cuda", [&]<typename HostT>() {
    using T = device_t<HostT>;
    const HostT host_value = value.to<HostT>();
    T device_value;
    static_assert(sizeof(T) == sizeof(HostT));
    std::memcpy(&device_value, &host_value, sizeof(T));  // same bits: core's Half/BFloat16 are IEEE/bf16
    launch_elementwise<T>(dst, FillFunctor<T>{device_value}, {});
  });
}

template <typename T>
__global__ void arange_kernel_device(T* out, int64_t n, double start, double step) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = store_compute<T>(static_cast<compute_t<T>>(start + static_cast<double>(i) * step));
  }
}

void arange_kernel(const Tensor& dst, double start, double step) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  visit_numeric_device(dst.dtype(), "arange", [&]<typename T>() {
    KernelContext context(dst);
    arange_kernel_device<T><<<grid_for(n), kBlockSize, 0, context.stream>>>(device_ptr<T>(dst), n, start, step);
    ACCEL_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

ACCEL_REGISTER_KERNEL(copy, DeviceType::CUDA, copy_kernel);
ACCEL_REGISTER_KERNEL(fill, DeviceType::CUDA, fill_kernel);
ACCEL_REGISTER_KERNEL(arange, DeviceType::CUDA, arange_kernel);

}  // namespace accel::cuda
