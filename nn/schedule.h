/// @file
/// Learning-rate schedules as transformers defines them: each step sets every group's lr to
/// initial_lr * factor(step). step() is called after optimizer.step(), as in PyTorch.
#pragma once

#include <functional>

#include "nn/optim.h"

namespace accel::nn {

class LRScheduler {
 public:
  /// factor(step) multiplies each group's initial lr; applied at construction (step 0).
  LRScheduler(Optimizer& optimizer, std::function<double(int64_t)> factor);
  void step();
  int64_t last_step() const { return step_; }
  std::vector<double> get_last_lr() const;
  nlohmann::json state_dict() const { return {{"step", step_}}; }
  void load_state_dict(const nlohmann::json& state);

 private:
  void apply();
  Optimizer& optimizer_;
  std::function<double(int64_t)> factor_;
  int64_t step_ = 0;
};

/// Linear warm-up from 0 to the initial lr over warmup steps, then linear decay to 0 at
/// total steps (get_linear_schedule_with_warmup).
LRScheduler linear_schedule_with_warmup(Optimizer& optimizer, int64_t warmup_steps, int64_t total_steps);
/// Warm-up, then half a cosine period (num_cycles 0.5) down to 0 (get_cosine_schedule_with_warmup).
LRScheduler cosine_schedule_with_warmup(Optimizer& optimizer, int64_t warmup_steps, int64_t total_steps,
                                        double num_cycles = 0.5);
/// Warm-up, then constant (get_constant_schedule_with_warmup).
LRScheduler constant_schedule_with_warmup(Optimizer& optimizer, int64_t warmup_steps);

}  // namespace accel::nn
