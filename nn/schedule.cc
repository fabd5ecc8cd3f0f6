// Learning-rate schedules; the factor formulas are transformers' (optimization.py).
#include "nn/schedule.h"

#include <algorithm>
#include <cmath>

namespace accel::nn {

LRScheduler::LRScheduler(Optimizer& optimizer, std::function<double(int64_t)> factor)
    : optimizer_(optimizer), factor_(std::move(factor)) {
  apply();
}

void LRScheduler::apply() {
  double f = factor_(step_);
  for (ParamGroup& g : optimizer_.param_groups()) g.lr = g.initial_lr * f;
}

void LRScheduler::step() {
  ++step_;
  apply();
}

std::vector<double> LRScheduler::get_last_lr() const {
  std::vector<double> lrs;
  for (const ParamGroup& g : optimizer_.param_groups()) lrs.push_back(g.lr);
  return lrs;
}

void LRScheduler::load_state_dict(const nlohmann::json& state) {
  ACCEL_CHECK(state.contains("step") && state["step"].is_number_integer(),
              "LRScheduler load_state_dict: expected {\"step\": <integer>} but got ", state.dump());
  step_ = state["step"].get<int64_t>();
  apply();
}

namespace {
double warmup(int64_t step, int64_t warmup_steps) {
  return static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup_steps));
}
}  // namespace

LRScheduler linear_schedule_with_warmup(Optimizer& optimizer, int64_t warmup_steps, int64_t total_steps) {
  return LRScheduler(optimizer, [=](int64_t step) {
    if (step < warmup_steps) return warmup(step, warmup_steps);
    return std::max(0.0, static_cast<double>(total_steps - step) /
                             static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps)));
  });
}

LRScheduler cosine_schedule_with_warmup(Optimizer& optimizer, int64_t warmup_steps, int64_t total_steps,
                                        double num_cycles) {
  return LRScheduler(optimizer, [=](int64_t step) {
    if (step < warmup_steps) return warmup(step, warmup_steps);
    double progress = static_cast<double>(step - warmup_steps) /
                      static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
    return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * num_cycles * 2.0 * progress)));
  });
}

LRScheduler constant_schedule_with_warmup(Optimizer& optimizer, int64_t warmup_steps) {
  return LRScheduler(optimizer, [=](int64_t step) {
    if (step < warmup_steps) return warmup(step, warmup_steps);
    return 1.0;
  });
}

}  // namespace accel::nn
