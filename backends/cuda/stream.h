/// @file
/// Streams and events of the CUDA backend. Every kernel and copy of the backend runs on the
/// calling thread's *current stream* of the tensor's device: the legacy default stream
/// unless a StreamGuard says otherwise (so work the NCCL group orders after "the default
/// stream" stays ordered). DeviceGuard makes a device current for a scope. Not a scheduler:
/// ordering across streams is the caller's, through Event.
#pragma once

#include <cuda_runtime_api.h>

namespace accel::cuda {

/// The calling thread's current stream on `device` (nullptr: the legacy default stream).
cudaStream_t current_stream(int device);
void set_current_stream(int device, cudaStream_t stream);

/// Number of CUDA devices; 0 (not an error) where there is no GPU or no driver.
int device_count();

/// Makes `device` current and restores the previous one on scope exit.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

/// A stream this object owns (non-blocking with respect to the legacy default stream).
class Stream {
 public:
  explicit Stream(int device);
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return stream_; }
  int device() const { return device_; }
  void synchronize() const;

 private:
  int device_;
  cudaStream_t stream_ = nullptr;
};

/// Sets the current stream of its device for a scope.
class StreamGuard {
 public:
  StreamGuard(int device, cudaStream_t stream);
  explicit StreamGuard(const Stream& stream) : StreamGuard(stream.device(), stream.get()) {}
  ~StreamGuard();
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  int device_;
  cudaStream_t previous_;
};

/// A CUDA event: record on one stream, make another wait for it, or time between two.
class Event {
 public:
  explicit Event(bool timing = false);
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  void record(cudaStream_t stream);
  void wait(cudaStream_t stream) const;  ///< stream waits (on the device) for the recorded work
  void synchronize() const;              ///< the host waits
  bool query() const;                    ///< true when the recorded work has finished
  float elapsed_ms(const Event& later) const;  ///< both recorded, timing events
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

}  // namespace accel::cuda
