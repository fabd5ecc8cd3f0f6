// Dynamic loss scaling.
#include "accelerate/grad_scaler.h"

#include <cmath>

#include "core/autograd/grad_mode.h"

namespace accel {

GradScaler::GradScaler(GradScalerOptions options) : options_(options), scale_(options.init_scale) {
  ACCEL_CHECK(options.init_scale > 0 && options.growth_factor > 1 && options.backoff_factor > 0 &&
                  options.backoff_factor < 1 && options.growth_interval > 0,
              "GradScaler: invalid options (need init_scale > 0, growth_factor > 1, 0 < backoff_factor < 1, "
              "growth_interval > 0)");
}

Tensor GradScaler::scale(const Tensor& loss) const { return options_.enabled ? loss * scale_ : loss; }

void GradScaler::unscale_(nn::Optimizer& optimizer) {
  if (!options_.enabled || unscaled_) return;
  NoGradGuard no_grad;
  double inverse = 1.0 / scale_;
  // The largest magnitude of a gradient is inf or NaN exactly when one of its elements is (max
  // propagates NaN), and so is the sum of those maxima (in float64 it cannot overflow): one
  // sum on the gradients' device, read once, instead of one device-to-host read per gradient.
  Tensor sum_of_maxima;  // () float64
  for (nn::ParamGroup& group : optimizer.param_groups()) {
    for (Tensor& p : group.params) {
      if (!p.grad().defined()) continue;
      Tensor& g = p.mutable_grad();
      g.mul_(inverse);
      Tensor largest = amax(abs(g)).to(kFloat64);
      sum_of_maxima = sum_of_maxima.defined() ? sum_of_maxima + largest : largest;
    }
  }
  found_inf_ = sum_of_maxima.defined() && !std::isfinite(sum_of_maxima.item_double());
  if (group_) {
    Tensor any = scalar_tensor(found_inf_ ? 1 : 0, kInt32, group_device_).reshape({1});
    group_->all_reduce(any, distributed::Reduce::Max)->wait();
    found_inf_ = any.item<int32_t>() != 0;
  }
  unscaled_ = true;
}

bool GradScaler::step(nn::Optimizer& optimizer) {
  if (!options_.enabled) {
    optimizer.step();
    return true;
  }
  unscale_(optimizer);
  if (found_inf_) return false;
  optimizer.step();
  return true;
}

void GradScaler::update() {
  if (!options_.enabled) return;
  if (found_inf_) {
    scale_ *= options_.backoff_factor;
    growth_tracker_ = 0;
  } else if (++growth_tracker_ == options_.growth_interval) {
    scale_ *= options_.growth_factor;
    growth_tracker_ = 0;
  }
  unscaled_ = false;
  found_inf_ = false;
}

nlohmann::json GradScaler::state_dict() const {
  return {{"scale", scale_},
          {"growth_factor", options_.growth_factor},
          {"backoff_factor", options_.backoff_factor},
          {"growth_interval", options_.growth_interval},
          {"growth_tracker", growth_tracker_}};
}

void GradScaler::load_state_dict(const nlohmann::json& state) {
  ACCEL_CHECK(state.is_object() && state.contains("scale") && state.contains("growth_tracker"),
              "GradScaler load_state_dict: expected {\"scale\", \"growth_tracker\", ...} but got ", state.dump());
  scale_ = state["scale"].get<double>();
  growth_tracker_ = state["growth_tracker"].get<int64_t>();
}

}  // namespace accel
