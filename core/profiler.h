/// @file
/// ACCEL_PROFILE=1: times every kernel call (by dispatch slot) and every backward node (by
/// name), and prints a table sorted by total time at exit, so anyone can see where the time
/// goes. Off, it costs one predictable branch per kernel call.
#pragma once

#include <chrono>

namespace accel::profiler {

bool enabled();
void record(const char* name, double seconds);

/// Times a scope when profiling is on.
class Scope {
 public:
  explicit Scope(const char* name) : name_(enabled() ? name : nullptr) {
    if (name_) start_ = std::chrono::steady_clock::now();
  }
  ~Scope() {
    if (name_) record(name_, std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  const char* name_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace accel::profiler
