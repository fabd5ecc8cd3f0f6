/// @file
/// GradScaler: dynamic loss scaling for fp16 with torch.cuda.amp.GradScaler's semantics.
/// The loss is multiplied by `scale` (2^16 to start) before backward so small fp16 gradients
/// do not flush to zero; before the optimizer step the gradients are divided back. If any
/// gradient is inf/NaN the step is skipped and the scale halves; after `growth_interval`
/// (2000) clean steps in a row it doubles.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>

#include "distributed/process_group.h"
#include "nn/optim.h"

namespace accel {

struct GradScalerOptions {
  double init_scale = 65536.0;
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
  bool enabled = true;
};

class GradScaler {
 public:
  explicit GradScaler(GradScalerOptions options = {});
  Tensor scale(const Tensor& loss) const;
  /// Divides the optimizer's gradients by the scale and records whether any is inf/NaN.
  /// At most once per step (step() calls it if the user did not, e.g. before clipping).
  void unscale_(nn::Optimizer& optimizer);
  /// optimizer.step() unless an inf/NaN was found; returns whether it stepped.
  bool step(nn::Optimizer& optimizer);
  /// Adjusts the scale for the next iteration; call once per step after step().
  void update();

  /// With gradients sharded across processes (ZeRO), each sees only its shard: unscale_ then
  /// agrees with the group on whether any process found an inf/NaN, through a flag on
  /// `device` (the NCCL group takes only its GPU's tensors).
  void set_process_group(std::shared_ptr<distributed::ProcessGroup> group, Device device = kCPU) {
    group_ = std::move(group);
    group_device_ = device;
  }

  double get_scale() const { return scale_; }
  bool is_enabled() const { return options_.enabled; }
  nlohmann::json state_dict() const;
  void load_state_dict(const nlohmann::json& state);

 private:
  GradScalerOptions options_;
  double scale_;
  int64_t growth_tracker_ = 0;
  bool unscaled_ = false;
  bool found_inf_ = false;
  std::shared_ptr<distributed::ProcessGroup> group_;
  Device group_device_ = kCPU;
};

}  // namespace accel
