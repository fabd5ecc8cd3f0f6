// The Accelerator's device rule and the CUDA calls behind it (see device_choice.h).
#include "accelerate/device_choice.h"

#include "core/error.h"

#ifdef ACCEL_WITH_CUDA
#include <cuda_runtime_api.h>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/stream.h"
#endif

namespace accel {

int visible_cuda_devices() {
#ifdef ACCEL_WITH_CUDA
  return cuda::device_count();
#else
  return 0;
#endif
}

Device accelerator_device(bool use_cpu, int cuda_devices, int local_rank) {
  if (use_cpu || cuda_devices <= 0) return kCPU;
  ACCEL_CHECK(local_rank >= 0, "Accelerator: the local rank must be >= 0, got ", local_rank,
              " (check LOCAL_RANK)");
  ACCEL_CHECK(local_rank < cuda_devices, "Accelerator: local rank ", local_rank, " needs cuda:", local_rank,
              " (one GPU per process), but this node shows ", cuda_devices, " CUDA device(s): start at most ",
              cuda_devices, " processes per node, check LOCAL_RANK and CUDA_VISIBLE_DEVICES, or run on the CPU ",
              "(AcceleratorOptions::cpu, ACCEL_USE_CPU=1, `accel launch --cpu`)");
  return Device(DeviceType::CUDA, local_rank);
}

void make_device_current(Device device) {
  if (!device.is_cuda()) return;
#ifdef ACCEL_WITH_CUDA
  ACCEL_CUDA_CHECK(cudaSetDevice(device.index));
#else
  ACCEL_FAIL("Accelerator: ", device, " cannot be made current: this build has no CUDA (configure with ACCEL_CUDA=ON)");
#endif
}

}  // namespace accel
