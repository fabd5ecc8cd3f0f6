// Copies between devices: host<->device through a pinned staging buffer with
// cudaMemcpyAsync on the device's current stream, device<->device with a peer copy. A copy
// to the host has finished when this returns; a copy from the host has left the caller's
// buffer (it is in the staging buffer or on the device), so the caller may free it at once.
#include <algorithm>
#include <cstring>
#include <mutex>

#include "backends/cuda/allocator.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/stream.h"
#include "core/kernels.h"

namespace accel::cuda {

namespace {

constexpr size_t kStagingChunk = 32 << 20;  // 32 MiB: bigger copies go through in chunks

// One pinned buffer per process, reused by every copy; `in_flight` marks the last
// host-to-device copy that reads from it, which the next user waits for.
struct Staging {
  std::mutex mutex;
  void* buffer = nullptr;
  cudaEvent_t in_flight = nullptr;
  bool pending = false;
};
Staging& staging() {
  static Staging* s = new Staging();  // never destroyed: copies may run during static teardown
  return *s;
}

void wait_for_staging(Staging& s) {
  if (s.pending) ACCEL_CUDA_CHECK(cudaEventSynchronize(s.in_flight));
  s.pending = false;
}

void host_to_device(const char* src, char* dst, size_t nbytes, int device) {
  DeviceGuard guard(device);
  cudaStream_t stream = current_stream(device);
  Staging& s = staging();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.buffer == nullptr) {
    s.buffer = allocate_pinned(kStagingChunk);
    ACCEL_CUDA_CHECK(cudaEventCreateWithFlags(&s.in_flight, cudaEventDisableTiming));
  }
  for (size_t done = 0; done < nbytes; done += kStagingChunk) {
    const size_t n = std::min(kStagingChunk, nbytes - done);
    wait_for_staging(s);
    std::memcpy(s.buffer, src + done, n);
    ACCEL_CUDA_CHECK(cudaMemcpyAsync(dst + done, s.buffer, n, cudaMemcpyHostToDevice, stream));
    ACCEL_CUDA_CHECK(cudaEventRecord(s.in_flight, stream));
    s.pending = true;
  }
}

void device_to_host(const char* src, char* dst, size_t nbytes, int device) {
  DeviceGuard guard(device);
  cudaStream_t stream = current_stream(device);
  Staging& s = staging();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.buffer == nullptr) {
    s.buffer = allocate_pinned(kStagingChunk);
    ACCEL_CUDA_CHECK(cudaEventCreateWithFlags(&s.in_flight, cudaEventDisableTiming));
  }
  wait_for_staging(s);
  for (size_t done = 0; done < nbytes; done += kStagingChunk) {
    const size_t n = std::min(kStagingChunk, nbytes - done);
    ACCEL_CUDA_CHECK(cudaMemcpyAsync(s.buffer, src + done, n, cudaMemcpyDeviceToHost, stream));
    ACCEL_CUDA_CHECK(cudaStreamSynchronize(stream));  // the bytes are on the host only after this
    std::memcpy(dst + done, s.buffer, n);
  }
}

void cross_device_copy(const Tensor& src, const Tensor& dst) {
  const size_t nbytes = src.nbytes();
  if (nbytes == 0) return;
  const char* from = static_cast<const char*>(src.data_ptr());
  char* to = static_cast<char*>(dst.data_ptr());
  if (src.is_cpu()) return host_to_device(from, to, nbytes, dst.device().index);
  if (dst.is_cpu()) return device_to_host(from, to, nbytes, src.device().index);
  // Device to device: queued on the destination's current stream after the source device's
  // queued work (the source's current stream is synchronized first: its kernels may still
  // be writing src).
  {
    DeviceGuard source_guard(src.device().index);
    ACCEL_CUDA_CHECK(cudaStreamSynchronize(current_stream(src.device().index)));
  }
  DeviceGuard guard(dst.device().index);
  ACCEL_CUDA_CHECK(cudaMemcpyPeerAsync(to, dst.device().index, from, src.device().index, nbytes,
                                       current_stream(dst.device().index)));
}

}  // namespace

ACCEL_REGISTER_KERNEL(cross_device_copy, DeviceType::CUDA, cross_device_copy);

}  // namespace accel::cuda
