/// @file
/// Module: the base of every layer and model. It owns named parameters, buffers and child
/// modules in registration order; names are dotted from the root ("encoder.layer.0.
/// attention.self.query.weight"), which are Hugging Face's names when a model registers
/// children the way transformers does. Layers keep Tensor handles to their parameters;
/// to(device, dtype) swaps the data under those handles (Tensor::set_data), so the handles
/// stay valid.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/ops.h"

namespace accel::nn {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

/// What load_state_dict found that did not fit.
struct LoadReport {
  std::vector<std::string> missing_keys;     ///< the module has them, the state dict does not
  std::vector<std::string> unexpected_keys;  ///< the state dict has them, the module does not
  std::vector<std::string> shape_mismatches;  ///< "name: checkpoint [a, b] vs model [c, d]"
  bool ok() const { return missing_keys.empty() && unexpected_keys.empty() && shape_mismatches.empty(); }
  std::string str() const;
};

class Module;

/// Hooks around a layer's forward: what ZeRO stage 3 hangs on every layer that holds
/// parameters, to gather them just before they are used and release them after.
/// before_forward runs before the layer reads its parameters; after_forward gets the output
/// (to hook its gradient, which arrives just before the layer's backward needs them again).
class ForwardHooks {
 public:
  virtual ~ForwardHooks() = default;
  virtual void before_forward(const Module& module) = 0;
  virtual void after_forward(const Module& module, const Tensor& output) = 0;
};

class Module {
 public:
  explicit Module(std::string type_name) : type_name_(std::move(type_name)) {}
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  const std::string& type_name() const { return type_name_; }

  NamedTensors named_parameters(bool recurse = true) const;
  std::vector<Tensor> parameters(bool recurse = true) const;
  NamedTensors named_buffers(bool recurse = true) const;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const { return children_; }
  /// Every module below (and including) this one, with dotted names ("" for this one).
  std::vector<std::pair<std::string, Module*>> named_modules();
  int64_t num_parameters() const;

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  /// Moves/casts every parameter and buffer; floating tensors only change dtype.
  void to(Device device);
  void to(DType dtype);
  void to(Device device, DType dtype);

  /// Parameters and buffers by dotted name (views of the live tensors).
  std::map<std::string, Tensor> state_dict() const;
  /// Copies values in. strict: any missing/unexpected key or shape mismatch is an error whose
  /// message lists them all; non-strict returns the report and loads what fits.
  LoadReport load_state_dict(const std::map<std::string, Tensor>& state, bool strict = true);

  void zero_grad(bool set_to_none = true);

  /// Hooks for this module only (not its children); null removes them. Only modules whose
  /// forward runs through run_forward() call them (runs_forward_hooks()).
  void set_forward_hooks(std::shared_ptr<ForwardHooks> hooks) { forward_hooks_ = std::move(hooks); }
  virtual bool runs_forward_hooks() const { return false; }
  bool has_forward_hooks() const { return forward_hooks_ != nullptr; }

 protected:
  /// A layer's forward body, between the hooks (if any are set).
  template <typename Forward>
  Tensor run_forward(Forward&& forward) const {
    if (!forward_hooks_) return forward();
    forward_hooks_->before_forward(*this);
    Tensor output = forward();
    forward_hooks_->after_forward(*this, output);
    return output;
  }

  Tensor register_parameter(const std::string& name, Tensor tensor, bool requires_grad = true);
  Tensor register_buffer(const std::string& name, Tensor tensor);
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    check_new_name(name);
    children_.emplace_back(name, module);
    return module;
  }

 private:
  void check_new_name(const std::string& name) const;
  void collect(const std::string& prefix, bool recurse, bool parameters, NamedTensors& out) const;
  void to_impl(std::optional<Device> device, std::optional<DType> dtype);

  std::string type_name_;
  bool training_ = true;
  NamedTensors parameters_;
  NamedTensors buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  std::shared_ptr<ForwardHooks> forward_hooks_;
};

/// Children named "0", "1", ... as torch.nn.ModuleList (BERT's encoder.layer.N).
template <typename M>
class ModuleList : public Module {
 public:
  ModuleList() : Module("ModuleList") {}
  void push_back(std::shared_ptr<M> module) {
    items_.push_back(register_module(std::to_string(items_.size()), std::move(module)));
  }
  size_t size() const { return items_.size(); }
  M& operator[](size_t i) const { return *items_.at(i); }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }

 private:
  std::vector<std::shared_ptr<M>> items_;
};

}  // namespace accel::nn
