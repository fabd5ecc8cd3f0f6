// The autograd engine: node bookkeeping, saved tensors, and the reverse-mode pass.
//
// backward(root): (1) walk the graph from root's node and count, for every reachable node,
// how many edges point at it; (2) start with root's gradient; (3) repeatedly run a node whose
// incoming gradients are all in (ties broken by highest sequence number, i.e. latest
// created first), summing the gradients each input receives; (4) release each node's saved
// tensors right after it runs unless retain_graph; (5) run the callbacks queued during the
// pass (queue_callback). Runs with grad mode off: backward rules are not themselves recorded
// (no double backward).
#include <atomic>
#include <cmath>
#include <queue>
#include <unordered_map>
#include <utility>

#include "core/autograd/anomaly.h"
#include "core/autograd/grad_mode.h"
#include "core/autograd/node.h"
#include "core/ops.h"
#include "core/profiler.h"
#include "core/trace.h"

namespace accel::autograd {

namespace {
std::atomic<uint64_t> next_sequence_nr{0};
// The callbacks of the backward pass running on this thread; null outside backward.
thread_local std::vector<std::function<void()>>* pass_callbacks = nullptr;
}  // namespace

void queue_callback(std::function<void()> callback) {
  ACCEL_CHECK(pass_callbacks != nullptr, "queue_callback: no backward pass is running on this thread; "
              "call it from a gradient hook");
  pass_callbacks->push_back(std::move(callback));
}

Node::Node(std::string name, std::vector<Edge> next_edges)
    : name_(std::move(name)), next_edges_(std::move(next_edges)), sequence_nr_(next_sequence_nr++) {}

std::vector<Tensor> FunctionNode::apply(const Tensor& grad_output) {
  ACCEL_CHECK(backward_ != nullptr, "backward: trying to backward through the graph a second time "
              "(through ", name(), "); its saved tensors were freed after the first backward. "
              "Pass retain_graph=true to the first backward() if you need to run it twice.");
  std::vector<Tensor> grads = backward_(grad_output);
  ACCEL_CHECK(grads.size() == next_edges().size(), name(), ": backward rule returned ", grads.size(),
              " gradients for ", next_edges().size(), " inputs");
  return grads;
}

AccumulateGrad::AccumulateGrad(Tensor variable)
    : Node("AccumulateGrad", {}), variable_(std::move(variable)) {}

std::vector<Tensor> AccumulateGrad::apply(const Tensor& grad_output) {
  AutogradMeta& meta = variable_.impl()->autograd_meta();
  Tensor grad = grad_output;
  for (auto& hook : meta.hooks) {
    Tensor replaced = hook(grad);
    if (replaced.defined()) grad = replaced;
  }
  ACCEL_CHECK(grad.sizes() == variable_.sizes(), "AccumulateGrad: gradient of shape ",
              grad.shape_string(), " for a leaf of shape ", variable_.shape_string());
  if (!meta.grad.defined()) {
    // Take the buffer when nobody else holds it; otherwise copy so that later in-place
    // accumulation cannot write into a tensor the user still sees.
    bool exclusive = grad.use_count() <= 2 && grad.is_contiguous() && grad.dtype() == variable_.dtype();
    meta.grad = exclusive ? grad.detach() : grad.to(variable_.dtype()).clone();
  } else {
    meta.grad.add_(grad);
  }
  for (auto& hook : meta.post_accumulate_hooks) hook(variable_);
  return {};
}

SavedTensor::SavedTensor(const Tensor& tensor, const char* op) : op_(op) {
  if (!tensor.defined()) return;
  tensor_ = tensor.detach();
  saved_version_ = tensor.version();
}

Tensor SavedTensor::get() const {
  if (tensor_.defined()) {
    ACCEL_CHECK(tensor_.version() == saved_version_, op_, ": a tensor of shape ", tensor_.shape_string(),
                " saved for backward was modified by an in-place operation (saved at version ",
                saved_version_, ", now version ", tensor_.version(), "). Clone it before changing it, "
                "or make the change out of place.");
  }
  return tensor_;
}

bool any_requires_grad(std::initializer_list<const Tensor*> inputs) {
  if (!GradMode::is_enabled()) return false;
  for (const Tensor* t : inputs) {
    if (t != nullptr && t->defined() && t->requires_grad()) return true;
  }
  return false;
}

Edge gradient_edge(const Tensor& tensor) {
  if (!tensor.defined() || !tensor.requires_grad()) return nullptr;
  AutogradMeta& meta = tensor.impl()->autograd_meta();
  if (meta.grad_fn) return meta.grad_fn;
  std::shared_ptr<Node> accumulator = meta.grad_accumulator.lock();
  if (!accumulator) {
    accumulator = std::make_shared<AccumulateGrad>(tensor);
    meta.grad_accumulator = accumulator;
  }
  return accumulator;
}

namespace {

// Anomaly detection (anomaly.h): whether a floating-point tensor holds a NaN or an Inf
// (summed in float64, which finite float values cannot overflow).
bool has_non_finite(const Tensor& t) {
  if (!t.defined() || !t.is_floating_point() || t.numel() == 0) return false;
  NoGradGuard no_grad;
  return !std::isfinite(t.to(kFloat64).sum().item<double>());
}

// "LogBackward" -> "Log": the forward op a node's name stands for.
std::string forward_name(const std::string& node_name) {
  const std::string suffix = "Backward";
  bool ends = node_name.size() > suffix.size() &&
              node_name.compare(node_name.size() - suffix.size(), suffix.size(), suffix) == 0;
  return ends ? node_name.substr(0, node_name.size() - suffix.size()) : node_name;
}

void check_forward(const Tensor& output, const char* name, const std::vector<const Tensor*>& inputs) {
  if (!has_non_finite(output)) return;
  bool inputs_finite = true;
  for (const Tensor* input : inputs) inputs_finite = inputs_finite && (input == nullptr || !has_non_finite(*input));
  ACCEL_FAIL("anomaly detection: the forward of ", forward_name(name), " (recorded as ", name,
             ") produced NaN or Inf in its output of shape ", output.shape_string(),
             inputs_finite ? "; its inputs were finite, so this op made it"
                           : "; an input was already NaN or Inf, so it came from upstream (the data, or an op "
                             "autograd did not record)");
}

void check_backward(const Node& node, const Tensor& grad_output, const std::vector<Tensor>& input_grads) {
  for (size_t i = 0; i < input_grads.size(); ++i) {
    if (!has_non_finite(input_grads[i])) continue;
    ACCEL_FAIL("anomaly detection: the backward of ", forward_name(node.name()), " (", node.name(),
               ") produced NaN or Inf in the gradient of its input ", i, " (shape ", input_grads[i].shape_string(),
               ")", has_non_finite(grad_output) ? "; the gradient flowing into it was already NaN or Inf"
                                                : "; the gradient flowing into it was finite, so this op made it");
  }
}

}  // namespace

void set_history(Tensor& output, const char* name, const std::vector<const Tensor*>& inputs,
                 BackwardFn backward) {
  if (anomaly_detection_enabled()) check_forward(output, name, inputs);
  std::vector<Edge> edges;
  edges.reserve(inputs.size());
  for (const Tensor* input : inputs) edges.push_back(input ? gradient_edge(*input) : nullptr);
  output.impl()->autograd_meta().grad_fn =
      std::make_shared<FunctionNode>(name, std::move(edges), std::move(backward));
}

namespace {

struct LaterFirst {
  bool operator()(Node* a, Node* b) const { return a->sequence_nr() < b->sequence_nr(); }
};

// Number of edges into each node reachable from root.
std::unordered_map<Node*, int> count_dependencies(Node* root) {
  std::unordered_map<Node*, int> dependencies;
  std::vector<Node*> stack{root};
  std::unordered_map<Node*, bool> seen{{root, true}};
  while (!stack.empty()) {
    Node* node = stack.back();
    stack.pop_back();
    for (const Edge& edge : node->next_edges()) {
      if (!edge) continue;
      dependencies[edge.get()] += 1;
      if (!seen[edge.get()]) {
        seen[edge.get()] = true;
        stack.push_back(edge.get());
      }
    }
  }
  return dependencies;
}

}  // namespace

void run_backward(const Tensor& root, const Tensor& grad_root, bool retain_graph) {
  ACCEL_CHECK(root.requires_grad(), "backward: the tensor (shape ", root.shape_string(),
              ") does not require grad and has no grad_fn; did you forget requires_grad_() on an "
              "input, or compute it under NoGradGuard?");
  Tensor seed = grad_root;
  if (!seed.defined()) {
    ACCEL_CHECK(root.numel() == 1, "backward: a gradient can be implied only for one-element "
                "outputs, but this output has shape ", root.shape_string(),
                "; pass the gradient explicitly: out.backward(grad)");
    seed = ones_like(root);
  } else {
    ACCEL_CHECK(seed.sizes() == root.sizes(), "backward: gradient of shape ", seed.shape_string(),
                " does not match the output shape ", root.shape_string());
  }

  trace::Span span("backward", "step");
  NoGradGuard no_grad;
  std::vector<std::function<void()>> callbacks;
  struct CallbackScope {  // restores the enclosing pass's list, also when a node throws
    std::vector<std::function<void()>>* outer;
    ~CallbackScope() { pass_callbacks = outer; }
  } callback_scope{std::exchange(pass_callbacks, &callbacks)};
  Edge root_node = gradient_edge(root);
  std::unordered_map<Node*, int> dependencies = count_dependencies(root_node.get());
  std::unordered_map<Node*, Tensor> pending_grads{{root_node.get(), seed}};
  std::priority_queue<Node*, std::vector<Node*>, LaterFirst> ready;
  ready.push(root_node.get());

  while (!ready.empty()) {
    Node* node = ready.top();
    ready.pop();
    Tensor grad = std::move(pending_grads[node]);
    pending_grads.erase(node);

    std::vector<Tensor> input_grads;
    if (grad.defined()) {
      for (auto& hook : node->pre_hooks) {
        Tensor replaced = hook(grad);
        if (replaced.defined()) grad = replaced;
      }
      {
        profiler::Scope timed(node->name().c_str(), node->name().c_str(), "autograd");
        input_grads = node->apply(grad);
      }
      if (anomaly_detection_enabled()) check_backward(*node, grad, input_grads);
      if (!retain_graph) node->release_saved();
    }
    const std::vector<Edge>& edges = node->next_edges();
    for (size_t i = 0; i < edges.size(); ++i) {
      Node* next = edges[i].get();
      if (next == nullptr) continue;
      if (i < input_grads.size() && input_grads[i].defined()) {
        Tensor& slot = pending_grads[next];
        slot = slot.defined() ? slot + input_grads[i] : input_grads[i];
      }
      if (--dependencies[next] == 0) ready.push(next);
    }
  }
  for (size_t i = 0; i < callbacks.size(); ++i) {  // by index: a callback may queue more
    std::function<void()> callback = std::move(callbacks[i]);
    callback();
  }
}

}  // namespace accel::autograd
