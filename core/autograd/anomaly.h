/// @file
/// Anomaly detection (torch.autograd.detect_anomaly): while it is on, every op that autograd
/// records checks its output, and every backward node checks the gradients it produced, and
/// the first NaN or Inf stops the program with an accel::Error naming the op, where
/// (forward or backward) and whether the op's own inputs were already non-finite (then the
/// culprit is upstream: the data or an op that was not recorded). It costs a reduction per
/// recorded op and per gradient, so it is for finding a bug, not for production runs.
/// On with DetectAnomalyGuard for a scope, or for the whole program with ACCEL_DETECT_ANOMALY=1.
#pragma once

namespace accel::autograd {

/// Whether anomaly detection is on (process-wide; ACCEL_DETECT_ANOMALY=1 turns it on at start).
bool anomaly_detection_enabled();
void set_anomaly_detection(bool enabled);

/// Turns anomaly detection on for its scope.
class DetectAnomalyGuard {
 public:
  DetectAnomalyGuard() : previous_(anomaly_detection_enabled()) { set_anomaly_detection(true); }
  ~DetectAnomalyGuard() { set_anomaly_detection(previous_); }
  DetectAnomalyGuard(const DetectAnomalyGuard&) = delete;
  DetectAnomalyGuard& operator=(const DetectAnomalyGuard&) = delete;

 private:
  bool previous_;
};

}  // namespace accel::autograd
