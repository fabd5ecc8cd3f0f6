// Anomaly detection's switch (anomaly.h); the checks themselves run in engine.cc, where ops
// record their history and where backward nodes run.
#include "core/autograd/anomaly.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace accel::autograd {

namespace {

std::atomic<bool>& flag() {
  static std::atomic<bool> enabled = [] {
    const char* value = std::getenv("ACCEL_DETECT_ANOMALY");
    return value != nullptr && (std::strcmp(value, "1") == 0 || std::strcmp(value, "true") == 0);
  }();
  return enabled;
}

}  // namespace

bool anomaly_detection_enabled() { return flag().load(std::memory_order_relaxed); }
void set_anomaly_detection(bool enabled) { flag().store(enabled, std::memory_order_relaxed); }

}  // namespace accel::autograd
