/// @file
/// Basic layers: Linear, Embedding, LayerNorm, Dropout and the activations. Parameter names
/// and default initializations follow torch.nn.
#pragma once

#include <optional>
#include <string>

#include "nn/module.h"

namespace accel::nn {

/// y = x W^T + b; weight (out_features, in_features), bias (out_features).
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true);
  Tensor forward(const Tensor& x) const {
    return run_forward([&] { return linear(x, weight, bias); });
  }
  /// gelu(forward(x)) with erf GELU, fused into the GEMM when nothing is recorded.
  Tensor forward_gelu(const Tensor& x) const {
    return run_forward([&] { return linear_gelu(x, weight, bias); });
  }
  bool runs_forward_hooks() const override { return true; }
  Tensor weight, bias;
};

/// weight (num_embeddings, embedding_dim) ~ N(0, 1); the padding row starts at zero and
/// receives no gradient.
class Embedding : public Module {
 public:
  Embedding(int64_t num_embeddings, int64_t embedding_dim, std::optional<int64_t> padding_idx = std::nullopt);
  Tensor forward(const Tensor& indices) const {
    return run_forward([&] { return embedding(weight, indices, padding_idx); });
  }
  bool runs_forward_hooks() const override { return true; }
  Tensor weight;
  std::optional<int64_t> padding_idx;
};

class LayerNorm : public Module {
 public:
  explicit LayerNorm(Shape normalized_shape, double eps = 1e-5, bool elementwise_affine = true);
  explicit LayerNorm(int64_t size, double eps = 1e-5) : LayerNorm(Shape{size}, eps) {}
  Tensor forward(const Tensor& x) const {
    return run_forward([&] { return layer_norm(x, normalized_shape, weight, bias, eps); });
  }
  /// forward(x + residual) in one pass (add_layer_norm).
  Tensor forward_add(const Tensor& x, const Tensor& residual) const {
    return run_forward([&] { return add_layer_norm(x, residual, normalized_shape, weight, bias, eps); });
  }
  bool runs_forward_hooks() const override { return true; }
  Shape normalized_shape;
  double eps;
  Tensor weight, bias;
};

class Dropout : public Module {
 public:
  explicit Dropout(double p = 0.5);
  Tensor forward(const Tensor& x) const { return dropout(x, p, is_training()); }
  double p;
};

class GELU : public Module {
 public:
  explicit GELU(std::string approximate = "none") : Module("GELU"), approximate(std::move(approximate)) {}
  Tensor forward(const Tensor& x) const { return gelu(x, approximate); }
  std::string approximate;
};

class ReLU : public Module {
 public:
  ReLU() : Module("ReLU") {}
  Tensor forward(const Tensor& x) const { return relu(x); }
};

class Tanh : public Module {
 public:
  Tanh() : Module("Tanh") {}
  Tensor forward(const Tensor& x) const { return tanh(x); }
};

/// Losses as modules, for code that reads like torch.nn.
class CrossEntropyLoss : public Module {
 public:
  explicit CrossEntropyLoss(int64_t ignore_index = -100, Reduction reduction = Reduction::Mean,
                            double label_smoothing = 0.0)
      : Module("CrossEntropyLoss"), ignore_index(ignore_index), reduction(reduction), label_smoothing(label_smoothing) {}
  Tensor forward(const Tensor& logits, const Tensor& target) const {
    return cross_entropy(logits, target, ignore_index, reduction, label_smoothing);
  }
  int64_t ignore_index;
  Reduction reduction;
  double label_smoothing;
};

class MSELoss : public Module {
 public:
  explicit MSELoss(Reduction reduction = Reduction::Mean) : Module("MSELoss"), reduction(reduction) {}
  Tensor forward(const Tensor& input, const Tensor& target) const { return mse_loss(input, target, reduction); }
  Reduction reduction;
};

}  // namespace accel::nn
