/// @file
/// The (op, device) dispatch table. Each op family declares one KernelSlot with its kernel's
/// signature (core/kernels.h); each backend fills the slot for its device from its own
/// files (backends/cpu/*.cc register with ACCEL_REGISTER_KERNEL). Kernels switch on dtype
/// themselves. A missing (op, device) is an error that names both.
#pragma once

#include <array>
#include <utility>

#include "core/autograd/grad_mode.h"
#include "core/device.h"
#include "core/error.h"
#include "core/profiler.h"

namespace accel {

template <typename Fn>
class KernelSlot {
 public:
  /// constexpr so the table is constant-initialized before any backend registers into it,
  /// whatever the static initialization order of the translation units.
  constexpr explicit KernelSlot(const char* op_name, const char* profile_name)
      : op_name_(op_name), profile_name_(profile_name), kernels_{} {}

  void set(DeviceType device, Fn* kernel) { kernels_[static_cast<size_t>(device)] = kernel; }
  bool has(DeviceType device) const { return kernels_[static_cast<size_t>(device)] != nullptr; }
  const char* op_name() const { return op_name_; }

  template <typename... Args>
  decltype(auto) operator()(Device device, Args&&... args) const {
    Fn* kernel = kernels_[static_cast<size_t>(device.type)];
    ACCEL_CHECK(kernel != nullptr, op_name_, ": no kernel registered for device ",
                device_type_name(device.type),
                device.is_cuda() ? " (this build has no CUDA backend, or it was not linked)" : "");
    NoGradGuard no_grad;  // kernels may call ops internally; those are never recorded
    profiler::Scope timed(profile_name_, op_name_, "compute");
    return kernel(std::forward<Args>(args)...);
  }

 private:
  const char* op_name_;
  const char* profile_name_;  ///< "K <op>" in the ACCEL_PROFILE table
  std::array<Fn*, kNumDeviceTypes> kernels_;
};

}  // namespace accel

#define ACCEL_REGISTER_KERNEL(slot, device, kernel)                                  \
  static const bool accel_registered_##slot = [] {                                   \
    ::accel::kernels::slot.set(device, kernel);                                      \
    return true;                                                                     \
  }()
