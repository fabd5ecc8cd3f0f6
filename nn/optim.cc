// SGD and AdamW. Updates run under no-grad; AdamW batches its parameters into calls of the
// fused multi-tensor kernel (adamw_multi_tensor).
#include "nn/optim.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <utility>

#include "core/autograd/grad_mode.h"
#include "core/kernels.h"

namespace accel::nn {

namespace {
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace

std::vector<ParamGroup> decay_groups(const Module& model, double lr, double weight_decay) {
  ParamGroup decay{{}, lr, weight_decay}, no_decay{{}, lr, 0.0};
  for (auto& [name, p] : model.named_parameters()) {
    if (!p.requires_grad()) continue;
    bool exempt = ends_with(name, "bias") || ends_with(name, "LayerNorm.weight") || ends_with(name, "layer_norm.weight");
    (exempt ? no_decay : decay).params.push_back(p);
  }
  return {decay, no_decay};
}

Optimizer::Optimizer(std::vector<ParamGroup> groups) : groups_(std::move(groups)) {
  ACCEL_CHECK(!groups_.empty(), "optimizer: got no parameter groups");
  for (ParamGroup& g : groups_) {
    ACCEL_CHECK(g.lr >= 0.0, "optimizer: invalid learning rate ", g.lr);
    ACCEL_CHECK(g.weight_decay >= 0.0, "optimizer: invalid weight decay ", g.weight_decay);
    g.initial_lr = g.lr;
    for (const Tensor& p : g.params) {
      ACCEL_CHECK(p.is_leaf() && p.requires_grad(), "optimizer: can only optimize leaf tensors that require grad");
    }
  }
}

void Optimizer::zero_grad(bool set_to_none) {
  NoGradGuard no_grad;
  for (Tensor& p : all_params()) {
    if (!p.grad().defined()) continue;
    if (set_to_none) p.set_grad(Tensor());
    else p.mutable_grad().zero_();
  }
}

void Optimizer::replace_parameters(std::vector<std::vector<Tensor>> params_per_group) {
  ACCEL_CHECK(params_per_group.size() == groups_.size(), "optimizer: replace_parameters got ", params_per_group.size(),
              " groups for an optimizer of ", groups_.size());
  ACCEL_CHECK(state_dict().tensors.empty(), "optimizer: cannot replace the parameters of an optimizer that has "
              "already stepped (its state belongs to the old parameters)");
  for (size_t i = 0; i < groups_.size(); ++i) {
    for (const Tensor& p : params_per_group[i]) {
      ACCEL_CHECK(p.is_leaf() && p.requires_grad(), "optimizer: can only optimize leaf tensors that require grad");
    }
    groups_[i].params = std::move(params_per_group[i]);
  }
}

int64_t Optimizer::state_bytes() const {
  int64_t bytes = 0;
  for (auto& [name, tensor] : state_dict().tensors) bytes += static_cast<int64_t>(tensor.nbytes());
  return bytes;
}

std::vector<Tensor> Optimizer::all_params() const {
  std::vector<Tensor> out;
  for (const ParamGroup& g : groups_) out.insert(out.end(), g.params.begin(), g.params.end());
  return out;
}

nlohmann::json Optimizer::groups_meta() const {
  nlohmann::json groups = nlohmann::json::array();
  for (const ParamGroup& g : groups_) {
    groups.push_back({{"lr", g.lr}, {"weight_decay", g.weight_decay}, {"initial_lr", g.initial_lr},
                      {"num_params", g.params.size()}});
  }
  return groups;
}

void Optimizer::load_groups_meta(const nlohmann::json& meta) {
  ACCEL_CHECK(meta.is_array() && meta.size() == groups_.size(), "optimizer load_state_dict: the checkpoint has ",
              meta.is_array() ? meta.size() : 0, " parameter groups but this optimizer has ", groups_.size());
  for (size_t i = 0; i < groups_.size(); ++i) {
    ACCEL_CHECK(meta[i].at("num_params").get<size_t>() == groups_[i].params.size(), "optimizer load_state_dict: group ",
                i, " has ", meta[i].at("num_params").get<size_t>(), " parameters in the checkpoint but ",
                groups_[i].params.size(), " here");
    groups_[i].lr = meta[i].at("lr").get<double>();
    groups_[i].weight_decay = meta[i].at("weight_decay").get<double>();
    groups_[i].initial_lr = meta[i].at("initial_lr").get<double>();
  }
}

// ---- SGD ----

namespace {
std::vector<ParamGroup> single_group(std::vector<Tensor> params, double lr, double weight_decay) {
  return {ParamGroup{std::move(params), lr, weight_decay}};
}
}  // namespace

SGD::SGD(std::vector<Tensor> params, SGDOptions options)
    : SGD(single_group(std::move(params), options.lr, options.weight_decay), options) {}

SGD::SGD(std::vector<ParamGroup> groups, SGDOptions options) : Optimizer(std::move(groups)), options_(options) {
  ACCEL_CHECK(!options.nesterov || (options.momentum > 0 && options.dampening == 0),
              "SGD: nesterov momentum requires a momentum and zero dampening");
}

void SGD::step() {
  NoGradGuard no_grad;
  int64_t index = 0;
  for (ParamGroup& group : groups_) {
    for (Tensor& p : group.params) {
      int64_t key = index++;
      if (!p.grad().defined()) continue;
      Tensor d = p.grad();
      if (group.weight_decay != 0) d = d + p * group.weight_decay;
      if (options_.momentum != 0) {
        auto it = momentum_buffers_.find(key);
        if (it == momentum_buffers_.end()) {
          it = momentum_buffers_.emplace(key, d.clone()).first;
        } else {
          it->second.mul_(options_.momentum).add_(d, 1.0 - options_.dampening);
        }
        d = options_.nesterov ? d + it->second * options_.momentum : it->second;
      }
      p.add_(d, -group.lr);
    }
  }
}

OptimizerState SGD::state_dict() const {
  OptimizerState state;
  state.meta = {{"type", "SGD"}, {"groups", groups_meta()}};
  for (auto& [key, buffer] : momentum_buffers_) state.tensors["state." + std::to_string(key) + ".momentum_buffer"] = buffer;
  return state;
}

void SGD::load_state_dict(const OptimizerState& state) {
  ACCEL_CHECK(state.meta.value("type", "") == "SGD", "SGD load_state_dict: the checkpoint holds a ",
              state.meta.value("type", "<missing>"), " optimizer state");
  load_groups_meta(state.meta.at("groups"));
  std::vector<Tensor> params = all_params();
  momentum_buffers_.clear();
  for (size_t i = 0; i < params.size(); ++i) {
    auto it = state.tensors.find("state." + std::to_string(i) + ".momentum_buffer");
    if (it != state.tensors.end()) momentum_buffers_[int64_t(i)] = it->second.to(params[i].device()).clone();
  }
}

// ---- AdamW ----

AdamW::AdamW(std::vector<Tensor> params, AdamWOptions options)
    : AdamW(single_group(std::move(params), options.lr, options.weight_decay), options) {}

AdamW::AdamW(std::vector<ParamGroup> groups, AdamWOptions options) : Optimizer(std::move(groups)), options_(options) {
  ACCEL_CHECK(options.beta1 >= 0 && options.beta1 < 1 && options.beta2 >= 0 && options.beta2 < 1,
              "AdamW: betas must be in [0, 1), got (", options.beta1, ", ", options.beta2, ")");
  ACCEL_CHECK(options.eps >= 0, "AdamW: invalid eps ", options.eps);
}

void AdamW::step() {
  NoGradGuard no_grad;
  // Parameters that share a device, a dtype, a step count and their group's lr and weight
  // decay take one multi-tensor call (a model's parameters usually form one or two batches:
  // the decay and no-decay groups), in the order they were first seen.
  using BatchKey = std::tuple<Device, DType, int64_t, double, double>;
  std::vector<std::pair<BatchKey, std::vector<kernels::AdamWTensors>>> batches;  // few: a linear search
  std::vector<Tensor> stepped;
  int64_t index = 0;
  for (ParamGroup& group : groups_) {
    for (Tensor& p : group.params) {
      int64_t key = index++;
      if (!p.grad().defined()) continue;
      ACCEL_CHECK(p.is_contiguous(), "AdamW: parameter ", key, " is not contiguous");
      State& s = state_[key];
      if (!s.exp_avg.defined()) {
        s.exp_avg = zeros_like(p);
        s.exp_avg_sq = zeros_like(p);
      }
      ACCEL_CHECK(s.exp_avg.dtype() == p.dtype() && s.exp_avg.sizes() == p.sizes() && s.exp_avg.is_contiguous() &&
                      s.exp_avg_sq.dtype() == p.dtype() && s.exp_avg_sq.sizes() == p.sizes() &&
                      s.exp_avg_sq.is_contiguous(),
                  "AdamW: the state of parameter ", key, " (", dtype_name(s.exp_avg.dtype()), " ",
                  s.exp_avg.shape_string(), ") does not match the parameter (", dtype_name(p.dtype()), " ",
                  p.shape_string(), ")");
      s.step += 1;
      const BatchKey batch{p.device(), p.dtype(), s.step, group.lr, group.weight_decay};
      auto it = std::find_if(batches.begin(), batches.end(), [&](const auto& b) { return b.first == batch; });
      if (it == batches.end()) it = batches.insert(batches.end(), {batch, {}});
      it->second.push_back({p, p.grad().to(p.dtype()).contiguous(), s.exp_avg, s.exp_avg_sq});
      stepped.push_back(p);
    }
  }
  for (const auto& [batch, tensors] : batches) {
    const auto& [device, dtype, step, lr, weight_decay] = batch;
    kernels::AdamWHyper hyper{lr, options_.beta1, options_.beta2, options_.eps, weight_decay, step};
    kernels::adamw_multi_tensor(device, tensors, hyper);
  }
  for (Tensor& p : stepped) p.storage()->bump_version();
}

OptimizerState AdamW::state_dict() const {
  OptimizerState state;
  nlohmann::json steps = nlohmann::json::object();
  for (auto& [key, s] : state_) {
    std::string prefix = "state." + std::to_string(key) + ".";
    state.tensors[prefix + "exp_avg"] = s.exp_avg;
    state.tensors[prefix + "exp_avg_sq"] = s.exp_avg_sq;
    steps[std::to_string(key)] = s.step;
  }
  state.meta = {{"type", "AdamW"},
                {"groups", groups_meta()},
                {"steps", steps},
                {"betas", {options_.beta1, options_.beta2}},
                {"eps", options_.eps}};
  return state;
}

void AdamW::load_state_dict(const OptimizerState& state) {
  ACCEL_CHECK(state.meta.value("type", "") == "AdamW", "AdamW load_state_dict: the checkpoint holds a ",
              state.meta.value("type", "<missing>"), " optimizer state");
  load_groups_meta(state.meta.at("groups"));
  std::vector<Tensor> params = all_params();
  state_.clear();
  for (auto& [key, step] : state.meta.at("steps").items()) {
    int64_t index = std::stoll(key);
    ACCEL_CHECK(index >= 0 && index < int64_t(params.size()), "AdamW load_state_dict: state for parameter ", index,
                " but the optimizer has ", params.size());
    std::string prefix = "state." + key + ".";
    auto m = state.tensors.find(prefix + "exp_avg"), v = state.tensors.find(prefix + "exp_avg_sq");
    ACCEL_CHECK(m != state.tensors.end() && v != state.tensors.end(), "AdamW load_state_dict: missing ", prefix,
                "exp_avg or exp_avg_sq");
    ACCEL_CHECK(m->second.sizes() == params[index].sizes(), "AdamW load_state_dict: ", prefix, "exp_avg has shape ",
                m->second.shape_string(), " but the parameter has shape ", params[index].shape_string());
    State& s = state_[index];
    s.step = step.get<int64_t>();
    s.exp_avg = m->second.to(params[index].device(), params[index].dtype()).contiguous().clone();
    s.exp_avg_sq = v->second.to(params[index].device(), params[index].dtype()).contiguous().clone();
  }
}

double grad_norm_partial(const std::vector<Tensor>& params, double norm_type) {
  NoGradGuard no_grad;
  bool infinity = std::isinf(norm_type);
  double total = 0.0;
  if (norm_type == 2.0) {  // one sum_of_squares (one read, one synchronization) per device and dtype
    std::vector<std::vector<Tensor>> groups;
    for (const Tensor& p : params) {
      if (!p.grad().defined()) continue;
      auto same = [&](const std::vector<Tensor>& group) {
        return group.front().device() == p.grad().device() && group.front().dtype() == p.grad().dtype();
      };
      auto group = std::find_if(groups.begin(), groups.end(), same);
      if (group == groups.end()) groups.push_back({p.grad()});
      else group->push_back(p.grad());
    }
    for (const std::vector<Tensor>& group : groups) total += sum_of_squares(group).item_double();
    return total;
  }
  for (const Tensor& p : params) {
    if (!p.grad().defined()) continue;
    const Tensor& g = p.grad();  // reductions accumulate in double whatever g's dtype
    if (infinity) total = std::max(total, amax(abs(g)).item_double());
    else total += sum(pow(abs(g), norm_type)).item_double();
  }
  return total;
}

double grad_norm_from_partial(double partial, double norm_type) {
  return std::isinf(norm_type) ? partial : std::pow(partial, 1.0 / norm_type);
}

void clip_grads_to_norm(const std::vector<Tensor>& params, double max_norm, double total_norm) {
  NoGradGuard no_grad;
  double coefficient = max_norm / (total_norm + 1e-6);
  if (coefficient < 1.0) {
    for (Tensor p : params) {  // a handle copy: the gradient is scaled in place
      if (p.grad().defined()) p.mutable_grad().mul_(coefficient);
    }
  }
}

double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type) {
  double total = grad_norm_from_partial(grad_norm_partial(params, norm_type), norm_type);
  clip_grads_to_norm(params, max_norm, total);
  return total;
}

}  // namespace accel::nn
