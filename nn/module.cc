// Module bookkeeping: registration, traversal, train/eval, device/dtype moves, state dicts.
#include "nn/module.h"

#include <algorithm>
#include <set>
#include <sstream>

#include "core/autograd/grad_mode.h"

namespace accel::nn {

std::string LoadReport::str() const {
  std::ostringstream out;
  auto list = [&](const char* what, const std::vector<std::string>& keys) {
    if (keys.empty()) return;
    out << "\n  " << what << " (" << keys.size() << "):";
    for (size_t i = 0; i < keys.size() && i < 20; ++i) out << "\n    " << keys[i];
    if (keys.size() > 20) out << "\n    ... and " << keys.size() - 20 << " more";
  };
  list("missing keys", missing_keys);
  list("unexpected keys", unexpected_keys);
  list("shape mismatches", shape_mismatches);
  return out.str();
}

void Module::check_new_name(const std::string& name) const {
  ACCEL_CHECK(!name.empty() && name.find('.') == std::string::npos, type_name_, ": invalid member name \"", name,
              "\" (names must be non-empty and contain no '.')");
  auto taken = [&](const auto& list) {
    return std::any_of(list.begin(), list.end(), [&](const auto& item) { return item.first == name; });
  };
  ACCEL_CHECK(!taken(parameters_) && !taken(buffers_) && !taken(children_), type_name_, ": \"", name,
              "\" is already registered");
}

Tensor Module::register_parameter(const std::string& name, Tensor tensor, bool requires_grad) {
  check_new_name(name);
  ACCEL_CHECK(tensor.defined(), type_name_, ": parameter \"", name, "\" is undefined");
  tensor = tensor.is_leaf() ? tensor : tensor.detach();
  if (requires_grad) tensor.requires_grad_();
  parameters_.emplace_back(name, tensor);
  return tensor;
}

Tensor Module::register_buffer(const std::string& name, Tensor tensor) {
  check_new_name(name);
  buffers_.emplace_back(name, tensor);
  return tensor;
}

void Module::collect(const std::string& prefix, bool recurse, bool parameters, NamedTensors& out) const {
  for (const auto& [name, tensor] : parameters ? parameters_ : buffers_) out.emplace_back(prefix + name, tensor);
  if (!recurse) return;
  for (const auto& [name, child] : children_) child->collect(prefix + name + ".", true, parameters, out);
}

NamedTensors Module::named_parameters(bool recurse) const {
  NamedTensors out;
  collect("", recurse, true, out);
  return out;
}

std::vector<Tensor> Module::parameters(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [name, tensor] : named_parameters(recurse)) out.push_back(tensor);
  return out;
}

NamedTensors Module::named_buffers(bool recurse) const {
  NamedTensors out;
  collect("", recurse, false, out);
  return out;
}

std::vector<std::pair<std::string, Module*>> Module::named_modules() {
  std::vector<std::pair<std::string, Module*>> out{{"", this}};
  for (auto& [name, child] : children_) {
    for (auto& [sub, module] : child->named_modules()) out.emplace_back(sub.empty() ? name : name + "." + sub, module);
  }
  return out;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (const Tensor& p : parameters()) n += p.numel();
  return n;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

void Module::to_impl(std::optional<Device> device, std::optional<DType> dtype) {
  NoGradGuard no_grad;
  auto move = [&](Tensor& t) {
    Tensor moved = t;
    if (device) moved = moved.to(*device);
    if (dtype && moved.is_floating_point()) moved = moved.to(*dtype);
    if (!moved.is_same(t)) t.set_data(moved);
  };
  for (auto& [name, tensor] : parameters_) move(tensor);
  for (auto& [name, tensor] : buffers_) move(tensor);
  for (auto& [name, child] : children_) child->to_impl(device, dtype);
}

void Module::to(Device device) { to_impl(device, std::nullopt); }
void Module::to(DType dtype) { to_impl(std::nullopt, dtype); }
void Module::to(Device device, DType dtype) { to_impl(device, dtype); }

std::map<std::string, Tensor> Module::state_dict() const {
  std::map<std::string, Tensor> out;
  for (auto& [name, tensor] : named_parameters()) out[name] = tensor.detach();
  for (auto& [name, tensor] : named_buffers()) out[name] = tensor.detach();
  return out;
}

LoadReport Module::load_state_dict(const std::map<std::string, Tensor>& state, bool strict) {
  LoadReport report;
  NamedTensors targets = named_parameters();
  for (auto& entry : named_buffers()) targets.push_back(entry);
  std::set<std::string> known;
  std::vector<std::pair<Tensor, Tensor>> copies;  // (destination, source)
  for (auto& [name, tensor] : targets) {
    known.insert(name);
    auto it = state.find(name);
    if (it == state.end()) {
      report.missing_keys.push_back(name);
    } else if (it->second.sizes() != tensor.sizes()) {
      report.shape_mismatches.push_back(name + ": checkpoint " + it->second.shape_string() + " vs model " +
                                        tensor.shape_string());
    } else {
      copies.emplace_back(tensor, it->second);
    }
  }
  for (auto& [name, tensor] : state) {
    if (!known.count(name)) report.unexpected_keys.push_back(name);
  }
  ACCEL_CHECK(!strict || report.ok(), "load_state_dict: the state dict does not fit ", type_name_, ":", report.str());
  NoGradGuard no_grad;
  for (auto& [destination, source] : copies) destination.copy_(source);
  return report;
}

void Module::zero_grad(bool set_to_none) {
  NoGradGuard no_grad;
  for (Tensor& p : parameters()) {
    if (!p.grad().defined()) continue;
    if (set_to_none) p.set_grad(Tensor());
    else p.mutable_grad().zero_();
  }
}

}  // namespace accel::nn
