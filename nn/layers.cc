// Layer construction and initialization.
#include "nn/layers.h"

#include "core/autograd/grad_mode.h"
#include "nn/init.h"

namespace accel::nn {

Linear::Linear(int64_t in_features, int64_t out_features, bool has_bias) : Module("Linear") {
  ACCEL_CHECK(in_features > 0 && out_features > 0, "Linear: expected positive sizes, got in_features=", in_features,
              ", out_features=", out_features);
  weight = register_parameter("weight", empty({out_features, in_features}));
  if (has_bias) bias = register_parameter("bias", empty({out_features}));
  init::linear_default_(weight, bias);
}

Embedding::Embedding(int64_t num_embeddings, int64_t embedding_dim, std::optional<int64_t> padding)
    : Module("Embedding"), padding_idx(padding) {
  ACCEL_CHECK(num_embeddings > 0 && embedding_dim > 0, "Embedding: expected positive sizes, got ", num_embeddings,
              " x ", embedding_dim);
  weight = register_parameter("weight", empty({num_embeddings, embedding_dim}));
  init::normal_(weight);
  if (padding_idx) {
    if (*padding_idx < 0) *padding_idx += num_embeddings;
    ACCEL_CHECK(*padding_idx >= 0 && *padding_idx < num_embeddings, "Embedding: padding_idx out of range");
    NoGradGuard no_grad;
    weight.select(0, *padding_idx).zero_();
  }
}

LayerNorm::LayerNorm(Shape shape, double eps_, bool elementwise_affine)
    : Module("LayerNorm"), normalized_shape(std::move(shape)), eps(eps_) {
  if (elementwise_affine) {
    weight = register_parameter("weight", ones(normalized_shape));
    bias = register_parameter("bias", zeros(normalized_shape));
  }
}

Dropout::Dropout(double p_) : Module("Dropout"), p(p_) {
  ACCEL_CHECK(p >= 0.0 && p <= 1.0, "Dropout: probability must be in [0, 1], got ", p);
}

}  // namespace accel::nn
