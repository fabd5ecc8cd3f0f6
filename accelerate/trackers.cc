// The JSON Lines tracker and the console progress line. The TensorBoard event-file writer
// lives in tensorboard.cc. Neither knows about ranks: the Accelerator only creates trackers
// (and enables Progress) on the main process.
#include "accelerate/trackers.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace accel::trackers {
namespace {

using Json = nlohmann::ordered_json;  // keeps "step" and "time" first on each line

double unix_seconds() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

// Adds each value to a JSON object under its key.
void add_values(Json& object, const Values& values) {
  for (const auto& entry : values) {  // not a structured binding: clang < 16 cannot capture one
    std::visit([&](const auto& v) { object[entry.first] = v; }, entry.second);
  }
}

class JsonlTracker : public Tracker {
 public:
  explicit JsonlTracker(std::filesystem::path path) : path_(std::move(path)) {
    std::error_code error;
    if (path_.has_parent_path()) std::filesystem::create_directories(path_.parent_path(), error);
    ACCEL_CHECK(!error, "jsonl tracker: cannot create directory '", path_.parent_path().string(),
                "': ", error.message());
    // Append, so that a resumed run continues its log instead of erasing it.
    out_.open(path_, std::ios::app);
    ACCEL_CHECK(out_.is_open(), "jsonl tracker: cannot open '", path_.string(), "' for appending: ",
                std::strerror(errno));
  }

  std::string name() const override { return "jsonl"; }

  void log_config(const Values& config) override {
    Json line = {{"config", Json::object()}};
    add_values(line["config"], config);
    write_line(line);
  }

  void log(const Values& values, int64_t step) override {
    Json line = {{"step", step}, {"time", unix_seconds()}};
    for (const auto& reserved : {"step", "time"}) {
      ACCEL_CHECK(!values.contains(reserved), "jsonl tracker: '", reserved,
                  "' is reserved for the line's own step and time; rename the logged value");
    }
    add_values(line, values);
    write_line(line);
  }

  void finish() override { out_.close(); }

 private:
  // One write and a flush per line: a crash loses at most the line being written, and
  // `tail -f` sees each line as soon as it is logged.
  void write_line(const Json& line) {
    ACCEL_CHECK(out_.is_open(), "jsonl tracker: '", path_.string(), "' was already finished");
    out_ << line.dump() + '\n';
    out_.flush();
    ACCEL_CHECK(out_.good(), "jsonl tracker: cannot write to '", path_.string(), "': ",
                std::strerror(errno));
  }

  std::filesystem::path path_;
  std::ofstream out_;
};

// "45s", "3m12s", "2h05m09s".
std::string format_duration(double seconds) {
  const int64_t total = std::llround(std::max(seconds, 0.0));
  const int64_t hours = total / 3600, minutes = total % 3600 / 60, secs = total % 60;
  char text[32];
  if (hours > 0) {
    std::snprintf(text, sizeof text, "%lldh%02lldm%02llds", static_cast<long long>(hours),
                  static_cast<long long>(minutes), static_cast<long long>(secs));
  } else if (minutes > 0) {
    std::snprintf(text, sizeof text, "%lldm%02llds", static_cast<long long>(minutes),
                  static_cast<long long>(secs));
  } else {
    std::snprintf(text, sizeof text, "%llds", static_cast<long long>(secs));
  }
  return text;
}

}  // namespace

std::unique_ptr<Tracker> make_jsonl_tracker(const std::string& dir, const std::string& run_name) {
  return std::make_unique<JsonlTracker>(std::filesystem::path(dir) / (run_name + ".jsonl"));
}

Progress::Progress(int64_t total_steps, bool enabled, int64_t every)
    : total_(total_steps),
      every_(std::max<int64_t>(every, 1)),
      enabled_(enabled),
      tty_(::isatty(STDOUT_FILENO) == 1),
      start_(std::chrono::steady_clock::now()) {}

void Progress::update(int64_t step, int64_t epoch, double loss, double lr, int64_t samples) {
  if (!enabled_) return;
  samples_ += samples;
  // A terminal redraws its one line on every step; a log file gets every `every`-th step
  // and the last one, so that it stays short.
  const bool last = total_ > 0 && step >= total_;
  if (!tty_ && step % every_ != 0 && !last) return;

  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double samples_per_second = elapsed > 0 ? samples_ / elapsed : 0.0;
  char line[256];
  int length = std::snprintf(line, sizeof line, "epoch %lld step %lld", static_cast<long long>(epoch),
                             static_cast<long long>(step));
  if (total_ > 0) {
    length += std::snprintf(line + length, sizeof line - length, "/%lld", static_cast<long long>(total_));
  }
  length += std::snprintf(line + length, sizeof line - length, " loss %.4f lr %.2g samples/s %.1f", loss,
                          lr, samples_per_second);
  if (total_ > 0 && step > 0) {
    const double eta = elapsed / static_cast<double>(step) * static_cast<double>(std::max<int64_t>(total_ - step, 0));
    std::snprintf(line + length, sizeof line - length, " ETA %s", format_duration(eta).c_str());
  }
  if (tty_) {
    std::printf("\r%s\033[K", line);  // \033[K clears what a longer previous line left behind
  } else {
    std::printf("%s\n", line);
  }
  std::fflush(stdout);
}

void Progress::finish() {
  if (!enabled_) return;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (tty_) std::printf("\n");  // keep the last redrawn line
  std::printf("done in %s, %.1f samples/s\n", format_duration(elapsed).c_str(),
              elapsed > 0 ? samples_ / elapsed : 0.0);
  std::fflush(stdout);
}

}  // namespace accel::trackers
