/// @file
/// Experiment trackers (Accelerator::init_trackers / log / end_training): JSON Lines and
/// TensorBoard event files, plus the console progress bar. Only the main process writes.
#pragma once

#include <chrono>
#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <variant>

namespace accel::trackers {

using Value = std::variant<double, int64_t, std::string>;
using Values = std::map<std::string, Value>;

class Tracker {
 public:
  virtual ~Tracker() = default;
  virtual std::string name() const = 0;
  virtual void log_config(const Values& config) = 0;
  virtual void log(const Values& values, int64_t step) = 0;
  virtual void finish() = 0;
};

/// `DIR/RUN.jsonl`: one line {"step": N, "time": unix seconds, key: value...} per log call,
/// the config first as {"config": {...}}; flushed after each line.
std::unique_ptr<Tracker> make_jsonl_tracker(const std::string& dir, const std::string& run_name);
/// `DIR/RUN/events.out.tfevents.TIME.HOST`: TFRecord-framed Event protos (masked
/// CRC32C) with scalar summaries, readable by tensorboard's own EventAccumulator. Strings
/// are skipped (TensorBoard scalars only); the config is written as a text summary.
std::unique_ptr<Tracker> make_tensorboard_tracker(const std::string& dir, const std::string& run_name);

/// TFRecord checksums: CRC32C (Castagnoli) and the masked form that frames each record.
uint32_t crc32c(std::string_view bytes);
uint32_t masked_crc32c(std::string_view bytes);

/// A progress line for long loops: epoch, step/total, loss, lr, samples/s, ETA. On a
/// terminal it redraws one line; otherwise it prints a plain line every `every` steps.
class Progress {
 public:
  Progress(int64_t total_steps, bool enabled, int64_t every = 10);
  /// `step` counts completed steps (1-based); `samples` is how many this step processed.
  void update(int64_t step, int64_t epoch, double loss, double lr, int64_t samples);
  void finish();

 private:
  int64_t total_, every_;
  bool enabled_, tty_;
  std::chrono::steady_clock::time_point start_;
  int64_t samples_ = 0;
};

}  // namespace accel::trackers
