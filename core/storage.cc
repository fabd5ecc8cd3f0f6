// Storage lifetime and the per-device allocator table (the CPU allocator itself is in
// cpu_allocator.cc).
#include "core/storage.h"

#include <array>

#include "core/cpu_allocator.h"
#include "core/error.h"

namespace accel {

namespace {

std::array<Allocator*, kNumDeviceTypes>& allocators() {
  static std::array<Allocator*, kNumDeviceTypes> table = {detail::default_cpu_allocator(), nullptr};
  return table;
}

}  // namespace

Allocator* get_allocator(DeviceType type) {
  Allocator* allocator = allocators()[static_cast<size_t>(type)];
  ACCEL_CHECK(allocator != nullptr, "no allocator for device type ", device_type_name(type),
              ": this build of accel has no ", device_type_name(type), " backend");
  return allocator;
}

void set_allocator(DeviceType type, Allocator* allocator) {
  allocators()[static_cast<size_t>(type)] = allocator;
}

StorageImpl::StorageImpl(size_t nbytes, Device device)
    : data_(get_allocator(device.type)->allocate(nbytes, device)), nbytes_(nbytes), device_(device) {}

StorageImpl::StorageImpl(void* data, size_t nbytes, Device device, std::function<void(void*)> deleter)
    : data_(data), nbytes_(nbytes), device_(device), deleter_(std::move(deleter)) {}

void StorageImpl::release() {
  ACCEL_CHECK(!deleter_, "Storage::release: the memory is owned elsewhere (a mapped file or user buffer)");
  if (released_) return;
  if (data_ != nullptr) get_allocator(device_.type)->deallocate(data_, nbytes_, device_);
  data_ = nullptr;
  released_ = true;
  has_been_released_ = true;
}

void StorageImpl::reallocate() {
  if (!released_) return;
  data_ = get_allocator(device_.type)->allocate(nbytes_, device_);
  released_ = false;
}

StorageImpl::~StorageImpl() {
  if (deleter_) {
    deleter_(data_);
  } else if (data_ != nullptr) {
    get_allocator(device_.type)->deallocate(data_, nbytes_, device_);
  }
}

}  // namespace accel
