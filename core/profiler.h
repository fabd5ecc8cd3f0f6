/// @file
/// ACCEL_PROFILE=1: times every kernel call (by dispatch slot) and every backward node (by
/// name), and prints a table sorted by total time at exit, so anyone can see where the time
/// goes. The same scopes feed ACCEL_TRACE's timeline (core/trace.h), so that one wrapper
/// around each kernel call serves both. With both off, a scope costs one predictable branch
/// on two static flags.
#pragma once

#include <cstdint>

#include "core/trace.h"

namespace accel::profiler {

namespace detail {
extern bool g_enabled;  // read from ACCEL_PROFILE before main
}  // namespace detail

inline bool enabled() { return detail::g_enabled; }
void record(const char* name, double seconds);
/// Forgets everything recorded so far, so that the table at exit covers only what follows:
/// a benchmark calls it after its warmup steps to leave out model setup and first-step work
/// (initialization, optimizer state, primitive creation).
void reset();

/// Times a scope when profiling or tracing is on: for the table under profile_name ("K matmul",
/// "MulBackward"), on the calling thread's trace track under trace_name and category.
class Scope {
 public:
  Scope(const char* profile_name, const char* trace_name, const char* category)
      : profiling_(enabled()), tracing_(trace::enabled()) {
    if (profiling_ | tracing_) {
      profile_name_ = profile_name;
      trace_name_ = trace_name;
      category_ = category;
      start_ns_ = trace::detail::now_ns();
    }
  }
  ~Scope() {
    if (profiling_ | tracing_) finish();
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  void finish();

  bool profiling_;
  bool tracing_;
  const char* profile_name_ = nullptr;
  const char* trace_name_ = nullptr;
  const char* category_ = nullptr;
  int64_t start_ns_ = 0;
};

}  // namespace accel::profiler
