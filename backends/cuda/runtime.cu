// CUDA device runtime: the device allocator (plain cudaMalloc for now; the caching
// allocator of the CUDA issue replaces it) and host<->device copies. Registers itself into
// core's allocator table and dispatch table; no CUDA call runs until a CUDA tensor is made,
// so a build with CUDA runs fine on machines without a GPU.
#include "backends/cuda/cuda_check.h"
#include "core/kernels.h"

namespace accel::cuda {

namespace {

class CudaAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes, Device device) override {
    if (nbytes == 0) return nullptr;
    int count = 0;
    cudaError_t status = cudaGetDeviceCount(&count);
    ACCEL_CHECK(status == cudaSuccess && count > 0, "cannot allocate on ", device.str(),
                ": no CUDA device is available (", cudaGetErrorString(status), ")");
    ACCEL_CHECK(device.index < count, "cannot allocate on ", device.str(), ": only ", count,
                " CUDA device(s) present");
    ACCEL_CUDA_CHECK(cudaSetDevice(device.index));
    void* ptr = nullptr;
    ACCEL_CUDA_CHECK(cudaMalloc(&ptr, nbytes));
    return ptr;
  }
  void deallocate(void* ptr, size_t, Device device) override {
    if (ptr == nullptr) return;
    cudaSetDevice(device.index);
    cudaFree(ptr);  // errors here cannot be reported from a destructor
  }
};

CudaAllocator allocator;
const bool allocator_registered = (set_allocator(DeviceType::CUDA, &allocator), true);

void cross_device_copy(const Tensor& src, const Tensor& dst) {
  cudaMemcpyKind kind = src.is_cpu() ? cudaMemcpyHostToDevice
                        : dst.is_cpu() ? cudaMemcpyDeviceToHost
                                       : cudaMemcpyDeviceToDevice;
  int device = src.is_cuda() ? src.device().index : dst.device().index;
  ACCEL_CUDA_CHECK(cudaSetDevice(device));
  ACCEL_CUDA_CHECK(cudaMemcpy(dst.data_ptr(), src.data_ptr(), src.nbytes(), kind));
}

}  // namespace

ACCEL_REGISTER_KERNEL(cross_device_copy, DeviceType::CUDA, cross_device_copy);

}  // namespace accel::cuda
