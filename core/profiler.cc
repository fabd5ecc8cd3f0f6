// The ACCEL_PROFILE table: totals per name, printed to stderr when the process exits.
#include "core/profiler.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace accel::profiler {

namespace {

struct Entry {
  double seconds = 0;
  int64_t calls = 0;
};

class Table {
 public:
  ~Table() { print(); }
  void add(const char* name, double seconds) {
    std::lock_guard<std::mutex> lock(mutex_);
    Entry& e = entries_[name];
    e.seconds += seconds;
    e.calls += 1;
  }
  void clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    entries_.clear();
  }
  void print() {
    if (entries_.empty()) return;
    std::vector<std::pair<std::string, Entry>> rows(entries_.begin(), entries_.end());
    std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
    double total = 0;
    for (auto& [name, e] : rows) total += e.seconds;
    std::fprintf(stderr, "\nACCEL_PROFILE: time per kernel (K ...) and per backward node (...Backward, which\n"
                         "includes the kernels it calls)\n");
    std::fprintf(stderr, "%-34s %10s %10s %12s %7s\n", "name", "calls", "total ms", "mean us", "share");
    for (auto& [name, e] : rows) {
      std::fprintf(stderr, "%-34s %10lld %10.1f %12.1f %6.1f%%\n", name.c_str(), static_cast<long long>(e.calls),
                   e.seconds * 1e3, e.seconds * 1e6 / static_cast<double>(e.calls), 100.0 * e.seconds / total);
    }
  }

 private:
  std::mutex mutex_;
  std::map<std::string, Entry> entries_;
};

Table& table() {
  static Table t;
  return t;
}

}  // namespace

bool detail::g_enabled = [] {
  const char* v = std::getenv("ACCEL_PROFILE");
  return v != nullptr && *v != '\0' && std::string(v) != "0";
}();

void record(const char* name, double seconds) { table().add(name, seconds); }
void reset() { table().clear(); }

void Scope::finish() {
  const int64_t end_ns = trace::detail::now_ns();
  if (profiling_) record(profile_name_, static_cast<double>(end_ns - start_ns_) * 1e-9);
  if (tracing_) trace::detail::record_complete(trace_name_, category_, start_ns_, end_ns);
}

}  // namespace accel::profiler
