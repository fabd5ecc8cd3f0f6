/// @file
/// Optimizers with torch.optim semantics: SGD (momentum, dampening, nesterov, weight decay)
/// and AdamW (decoupled weight decay, bias correction), parameter groups with their own lr
/// and weight decay, zero_grad(set_to_none), and a state dict (tensors + JSON) that
/// checkpoints save and load.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nn/module.h"

namespace accel::nn {

struct ParamGroup {
  std::vector<Tensor> params;
  double lr = 1e-3;
  double weight_decay = 0.0;
  double initial_lr = 0.0;  ///< set by schedulers: the lr they scale
};

/// Splits a model's parameters the way Hugging Face recipes do: no weight decay on biases
/// and LayerNorm weights (names ending in "bias" or "LayerNorm.weight" / "layer_norm.weight").
std::vector<ParamGroup> decay_groups(const Module& model, double lr, double weight_decay);

struct OptimizerState {
  std::map<std::string, Tensor> tensors;  ///< "state.<param index>.<name>"
  nlohmann::json meta;                    ///< hyperparameters, step counts
};

class Optimizer {
 public:
  explicit Optimizer(std::vector<ParamGroup> groups);
  virtual ~Optimizer() = default;
  virtual void step() = 0;
  void zero_grad(bool set_to_none = true);
  std::vector<ParamGroup>& param_groups() { return groups_; }
  const std::vector<ParamGroup>& param_groups() const { return groups_; }
  virtual OptimizerState state_dict() const = 0;
  virtual void load_state_dict(const OptimizerState& state) = 0;
  /// Replaces the parameters of each group (same number of groups, hyperparameters kept);
  /// only before the first step, while no state exists. ZeRO gives the optimizer the shards
  /// this process owns in place of the full parameters.
  void replace_parameters(std::vector<std::vector<Tensor>> params_per_group);
  /// Bytes of optimizer state (moments, momentum buffers) this optimizer holds.
  int64_t state_bytes() const;

 protected:
  /// Global index of each parameter across groups, the key of its state.
  std::vector<Tensor> all_params() const;
  nlohmann::json groups_meta() const;
  void load_groups_meta(const nlohmann::json& meta);
  std::vector<ParamGroup> groups_;
};

struct SGDOptions {
  double lr = 1e-3, momentum = 0.0, dampening = 0.0, weight_decay = 0.0;
  bool nesterov = false;
};

class SGD : public Optimizer {
 public:
  SGD(std::vector<Tensor> params, SGDOptions options);
  SGD(std::vector<ParamGroup> groups, SGDOptions options);
  void step() override;
  OptimizerState state_dict() const override;
  void load_state_dict(const OptimizerState& state) override;

 private:
  SGDOptions options_;
  std::map<int64_t, Tensor> momentum_buffers_;
};

struct AdamWOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 1e-2;
};

class AdamW : public Optimizer {
 public:
  AdamW(std::vector<Tensor> params, AdamWOptions options);
  AdamW(std::vector<ParamGroup> groups, AdamWOptions options);
  void step() override;
  OptimizerState state_dict() const override;
  void load_state_dict(const OptimizerState& state) override;

 private:
  struct State {
    int64_t step = 0;
    Tensor exp_avg, exp_avg_sq;
  };
  AdamWOptions options_;
  std::map<int64_t, State> state_;
};

/// Scales gradients so that their global norm is at most max_norm; returns the norm before
/// clipping (torch.nn.utils.clip_grad_norm_). norm_type 2 or infinity.
double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type = 2.0);

/// The pieces of clip_grad_norm_, for gradients sharded across processes (ZeRO): this
/// process's part (sum of |g|^norm_type, or max |g| for infinity), which the caller reduces
/// across processes (sum, or max), then the norm from the reduced part and the scaling.
double grad_norm_partial(const std::vector<Tensor>& params, double norm_type);
double grad_norm_from_partial(double partial, double norm_type);
void clip_grads_to_norm(const std::vector<Tensor>& params, double max_norm, double total_norm);

}  // namespace accel::nn
