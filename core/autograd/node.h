/// @file
/// The autograd tape. Every differentiable op that sees an input requiring grad records a
/// Node: the function from the gradient of its (single) output to the gradients of its
/// inputs, plus edges to the nodes that produced those inputs. Leaves that require grad end
/// in an AccumulateGrad node that adds into leaf.grad(). The engine (engine.cc) runs the
/// graph in reverse topological order.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace accel::autograd {

class Node;
using Edge = std::shared_ptr<Node>;  ///< null: that input needs no gradient

class Node {
 public:
  Node(std::string name, std::vector<Edge> next_edges);
  virtual ~Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  /// Gradients for each input (one per next edge, undefined where none) given the gradient
  /// of this node's output.
  virtual std::vector<Tensor> apply(const Tensor& grad_output) = 0;
  /// Frees what the node saved for backward; called right after it runs unless retain_graph.
  virtual void release_saved() {}

  const std::string& name() const { return name_; }
  const std::vector<Edge>& next_edges() const { return next_edges_; }
  /// Creation order; the engine runs later nodes first when several are ready, so gradients
  /// arrive in roughly reverse order of the forward pass (what DDP's buckets rely on).
  uint64_t sequence_nr() const { return sequence_nr_; }

  /// Hooks on the gradient flowing into this node (tensor hooks of non-leaf tensors).
  std::vector<std::function<Tensor(const Tensor&)>> pre_hooks;

 private:
  std::string name_;
  std::vector<Edge> next_edges_;
  uint64_t sequence_nr_;
};

/// The backward of one op, as a closure over what it saved. Releasing drops the closure and
/// with it the saved tensors.
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output)>;

class FunctionNode final : public Node {
 public:
  FunctionNode(std::string name, std::vector<Edge> next_edges, BackwardFn backward)
      : Node(std::move(name), std::move(next_edges)), backward_(std::move(backward)) {}
  std::vector<Tensor> apply(const Tensor& grad_output) override;
  void release_saved() override { backward_ = nullptr; }

 private:
  BackwardFn backward_;
};

/// Sink for a leaf: runs the leaf's hooks, adds the gradient into leaf.grad(), then runs
/// the post-accumulate hooks.
class AccumulateGrad final : public Node {
 public:
  explicit AccumulateGrad(Tensor variable);
  std::vector<Tensor> apply(const Tensor& grad_output) override;
  const Tensor& variable() const { return variable_; }

 private:
  Tensor variable_;
};

struct AutogradMeta {
  bool requires_grad = false;
  Tensor grad;
  std::shared_ptr<Node> grad_fn;            ///< set on non-leaf results of recorded ops
  std::weak_ptr<Node> grad_accumulator;     ///< leaves: shared by every use of the leaf
  std::vector<std::function<Tensor(const Tensor&)>> hooks;             ///< leaves only
  std::vector<std::function<void(const Tensor&)>> post_accumulate_hooks;  ///< leaves only
};

/// A tensor saved for backward: a detached alias plus the storage version at save time, so
/// that an in-place change before backward is an error instead of a wrong gradient.
class SavedTensor {
 public:
  SavedTensor() = default;
  SavedTensor(const Tensor& tensor, const char* op);
  Tensor get() const;
  bool defined() const { return tensor_.defined(); }

 private:
  Tensor tensor_;
  uint64_t saved_version_ = 0;
  const char* op_ = "";
};

/// True when an op on these inputs must be recorded (grad mode on and some input requires grad).
bool any_requires_grad(std::initializer_list<const Tensor*> inputs);
inline bool any_requires_grad(const std::vector<Tensor>& inputs) {
  for (const Tensor& t : inputs) if (t.defined() && t.requires_grad()) return true;
  return false;
}
/// The edge a gradient for `tensor` flows into: its grad_fn, its leaf accumulator, or null.
Edge gradient_edge(const Tensor& tensor);
/// Records `backward` as the grad_fn of `output`, with one edge per input.
void set_history(Tensor& output, const char* name, const std::vector<const Tensor*>& inputs,
                 BackwardFn backward);

/// Runs backward from `root` with gradient `grad_root` (ones for a one-element root).
void run_backward(const Tensor& root, const Tensor& grad_root, bool retain_graph);

/// Runs `callback` once the backward pass running on this thread has run all its nodes, before
/// backward() returns (in queue order; a callback may queue more). Only valid while a backward
/// pass runs, i.e. from a hook: DDP queues one from its first gradient hook to wait for its
/// bucket all-reduces at the end of the pass.
void queue_callback(std::function<void()> callback);

}  // namespace accel::autograd
