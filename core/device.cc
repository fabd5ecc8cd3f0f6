// Parsing and printing of devices.
#include "core/device.h"

#include "core/error.h"

namespace accel {

const char* device_type_name(DeviceType type) { return type == DeviceType::CPU ? "cpu" : "cuda"; }

Device::Device(const std::string& spec) {
  if (spec == "cpu") return;
  if (spec.rfind("cuda", 0) == 0) {
    type = DeviceType::CUDA;
    if (spec.size() == 4) return;
    ACCEL_CHECK(spec[4] == ':' && spec.size() > 5 &&
                    spec.find_first_not_of("0123456789", 5) == std::string::npos,
                "invalid device \"", spec, "\": expected cpu, cuda or cuda:N");
    index = std::stoi(spec.substr(5));
    return;
  }
  ACCEL_FAIL("invalid device \"", spec, "\": expected cpu, cuda or cuda:N");
}

std::string Device::str() const {
  if (is_cpu()) return "cpu";
  return "cuda:" + std::to_string(index);
}

}  // namespace accel
