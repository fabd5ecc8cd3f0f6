/// @file
/// Storage: a refcounted block of bytes on one device, plus the version counter that autograd
/// uses to notice in-place changes to tensors it saved. Tensors (and all their views) share a
/// Storage through std::shared_ptr. Allocators are per device type; the CUDA backend
/// registers its own.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include "core/device.h"

namespace accel {

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t nbytes, Device device) = 0;
  virtual void deallocate(void* ptr, size_t nbytes, Device device) = 0;
};

/// Returns the allocator registered for this device type; throws if none (e.g.\ CUDA in a
/// build without the CUDA backend).
Allocator* get_allocator(DeviceType type);
void set_allocator(DeviceType type, Allocator* allocator);

class StorageImpl {
 public:
  /// Allocates nbytes on device with that device's allocator.
  StorageImpl(size_t nbytes, Device device);
  /// Wraps memory owned elsewhere (a memory-mapped file, a user buffer); deleter frees it.
  StorageImpl(void* data, size_t nbytes, Device device, std::function<void(void*)> deleter);
  ~StorageImpl();
  StorageImpl(const StorageImpl&) = delete;
  StorageImpl& operator=(const StorageImpl&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }

  /// Frees the bytes but keeps this object, so every tensor viewing it (a module's handle, a
  /// tensor autograd saved) stays valid and sees the data again after reallocate(), which
  /// brings back nbytes() of uninitialized memory. This is how ZeRO stage 3 drops a
  /// parameter between uses (FSDP's storage.resize_(0)). Only for allocator-owned storage.
  void release();
  void reallocate();
  bool is_released() const { return released_; }
  /// Whether release() was ever called: the storage is one ZeRO stage 3 shards, so caches must
  /// not keep copies of it (DerivedTensor).
  bool has_been_released() const { return has_been_released_; }
  Device device() const { return device_; }

  /// Bumped by every in-place write through any tensor that views this storage.
  uint64_t version() const { return version_.load(std::memory_order_relaxed); }
  void bump_version() { version_.fetch_add(1, std::memory_order_relaxed); }

 private:
  void* data_;
  size_t nbytes_;
  Device device_;
  std::function<void(void*)> deleter_;  ///< empty: returned to the device allocator
  std::atomic<uint64_t> version_{0};
  bool released_ = false;
  bool has_been_released_ = false;
};

using Storage = std::shared_ptr<StorageImpl>;

}  // namespace accel
