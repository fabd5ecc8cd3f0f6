/// @file
/// Where a tensor's bytes live: the CPU or CUDA device N.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>

namespace accel {

enum class DeviceType : uint8_t { CPU = 0, CUDA = 1 };
inline constexpr int kNumDeviceTypes = 2;

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  Device() = default;
  Device(DeviceType type, int index = 0) : type(type), index(index) {}
  /// "cpu", "cuda", "cuda:1"
  Device(const std::string& spec);
  Device(const char* spec) : Device(std::string(spec)) {}

  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  std::string str() const;
  bool operator==(const Device& other) const = default;
};

inline const Device kCPU{DeviceType::CPU, 0};
const char* device_type_name(DeviceType type);
inline std::ostream& operator<<(std::ostream& out, const Device& d) { return out << d.str(); }

}  // namespace accel
