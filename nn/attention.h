/// @file
/// Multi-head self-attention as BERT computes it: query/key/value projections, scaled
/// dot-product attention with an additive mask (core's scaled_dot_product_attention), heads
/// merged back. The output projection is not part of it (Hugging Face puts it in
/// BertSelfOutput), so the parameter names are exactly transformers' "query", "key", "value".
#pragma once

#include <memory>
#include <mutex>
#include <utility>

#include "core/derived_tensor.h"
#include "nn/layers.h"

namespace accel::nn {

/// (B, T) mask of 1 (attend) / 0 (padding) -> additive (B, 1, 1, T): 0 or the dtype's most
/// negative value, as transformers' get_extended_attention_mask.
Tensor additive_attention_mask(const Tensor& attention_mask, DType dtype);

class MultiHeadSelfAttention : public Module {
 public:
  MultiHeadSelfAttention(int64_t hidden_size, int64_t num_heads, double attention_dropout = 0.0);
  /// x (B, T, hidden), additive_mask (B, 1, 1, T) or undefined -> context (B, T, hidden)
  Tensor forward(const Tensor& x, const Tensor& additive_mask) const;
  /// The attention of x's first `positions` positions over all of x's: x (B, T, hidden) ->
  /// context (B, positions, hidden), forward(x, additive_mask)[:, :positions] for less work.
  /// With dropout it draws fewer numbers than forward, so its masks are not forward's.
  Tensor forward_leading(const Tensor& x, const Tensor& additive_mask, int64_t positions) const;
  /// Whether forward(x) runs query, key and value as one GEMM: no hooks on them, biases, and
  /// either nothing to record or a fused attention kernel for x's device to record with.
  bool fuses_projections(const Tensor& x) const;
  /// Whether a forward on x records the projections for autograd.
  bool records_projections(const Tensor& x) const;

  int64_t hidden_size, num_heads, head_dim;
  double attention_dropout;
  std::shared_ptr<Linear> query, key, value;

 private:
  Tensor split_heads(const Tensor& t) const;
  Tensor merge_heads(const Tensor& context) const;
  /// The projections' weights stacked, (3 * hidden, hidden), and biases, (3 * hidden), in the
  /// dtype linear runs in (autocast's or the weights'). While recording they are cat's outputs
  /// (its backward splits the gradient back); otherwise they are kept between forwards while the
  /// weights are unchanged (their storage and version).
  std::pair<Tensor, Tensor> stacked_projections(bool records) const;

  mutable std::mutex stacked_mutex_;  // forward is const and may run on several threads
  mutable DerivedTensor stacked_weight_, stacked_bias_;
};

}  // namespace accel::nn
