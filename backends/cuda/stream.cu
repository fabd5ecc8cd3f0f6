// Current-stream bookkeeping, device and stream guards, events (see stream.h).
#include "backends/cuda/stream.h"

#include <array>

#include "backends/cuda/cuda_check.h"

namespace accel::cuda {

namespace {
constexpr int kMaxDevices = 64;
thread_local std::array<cudaStream_t, kMaxDevices> current_streams{};  // all nullptr: legacy default

void check_index(int device) {
  ACCEL_CHECK(device >= 0 && device < kMaxDevices, "CUDA device index ", device, " is out of range [0, ",
              kMaxDevices, ")");
}
}  // namespace

cudaStream_t current_stream(int device) {
  check_index(device);
  return current_streams[device];
}

void set_current_stream(int device, cudaStream_t stream) {
  check_index(device);
  current_streams[device] = stream;
}

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error so later calls see a clean state
    return 0;
  }
  return count;
}

DeviceGuard::DeviceGuard(int device) {
  ACCEL_CUDA_CHECK(cudaGetDevice(&previous_));
  if (previous_ != device) ACCEL_CUDA_CHECK(cudaSetDevice(device));
}
DeviceGuard::~DeviceGuard() {
  int now = -1;
  if (cudaGetDevice(&now) == cudaSuccess && now != previous_) cudaSetDevice(previous_);
}

Stream::Stream(int device) : device_(device) {
  DeviceGuard guard(device);
  ACCEL_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
}
Stream::~Stream() { cudaStreamDestroy(stream_); }
void Stream::synchronize() const { ACCEL_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

StreamGuard::StreamGuard(int device, cudaStream_t stream) : device_(device), previous_(current_stream(device)) {
  set_current_stream(device, stream);
}
StreamGuard::~StreamGuard() { set_current_stream(device_, previous_); }

Event::Event(bool timing) {
  ACCEL_CUDA_CHECK(cudaEventCreateWithFlags(&event_, timing ? cudaEventDefault : cudaEventDisableTiming));
}
Event::~Event() { cudaEventDestroy(event_); }
void Event::record(cudaStream_t stream) { ACCEL_CUDA_CHECK(cudaEventRecord(event_, stream)); }
void Event::wait(cudaStream_t stream) const { ACCEL_CUDA_CHECK(cudaStreamWaitEvent(stream, event_, 0)); }
void Event::synchronize() const { ACCEL_CUDA_CHECK(cudaEventSynchronize(event_)); }
bool Event::query() const {
  cudaError_t status = cudaEventQuery(event_);
  if (status == cudaErrorNotReady) return false;
  ACCEL_CUDA_CHECK(status);
  return true;
}
float Event::elapsed_ms(const Event& later) const {
  float ms = 0;
  ACCEL_CUDA_CHECK(cudaEventElapsedTime(&ms, event_, later.event_));
  return ms;
}

}  // namespace accel::cuda
