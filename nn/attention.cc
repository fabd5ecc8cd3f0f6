// Self-attention: projections (one stacked GEMM), head split/merge as views,
// and the attention itself (core's scaled_dot_product_attention, fused where the backend can).
#include "nn/attention.h"

#include <limits>

#include "core/autocast.h"
#include "core/autograd/node.h"

namespace accel::nn {

Tensor additive_attention_mask(const Tensor& attention_mask, DType dtype) {
  ACCEL_CHECK(attention_mask.dim() == 2, "additive_attention_mask: expected a (batch, seq) mask but got shape ",
              attention_mask.shape_string());
  double lowest = dtype == kFloat64 ? std::numeric_limits<double>::lowest()
                  : dtype == kFloat16 ? -65504.0
                  : dtype == kBFloat16 ? -3.3895313892515355e38
                                       : static_cast<double>(std::numeric_limits<float>::lowest());
  Tensor keep = attention_mask.to(dtype).unsqueeze(1).unsqueeze(1);  // (B, 1, 1, T)
  return (1.0 - keep) * lowest;
}

MultiHeadSelfAttention::MultiHeadSelfAttention(int64_t hidden, int64_t heads, double dropout_p)
    : Module("MultiHeadSelfAttention"), hidden_size(hidden), num_heads(heads), attention_dropout(dropout_p) {
  ACCEL_CHECK(heads > 0 && hidden % heads == 0, "MultiHeadSelfAttention: hidden size ", hidden,
              " is not a multiple of the number of attention heads ", heads);
  head_dim = hidden / heads;
  query = register_module("query", std::make_shared<Linear>(hidden, hidden));
  key = register_module("key", std::make_shared<Linear>(hidden, hidden));
  value = register_module("value", std::make_shared<Linear>(hidden, hidden));
}

// With no hooks on the projections (ZeRO-3 gathers their weights in hooks), the three
// projections run as one GEMM on their weights stacked, (3 * hidden, hidden), and attention
// reads query, key and value as views of its output (packed_self_attention). An N of 3 * hidden
// splits between the cores where N = hidden does not (bench_gemm, 2 threads: MiniLM's 4096x384
// @ (1152x384)^T ran at 140 GFLOP/s, each 384x384 at 80; BERT-base's 1024x768 @ (2304x768)^T in
// 20.4 ms against 3 x 7.3). In training the fused attention's backward writes the three
// gradients into one tensor, so the stacked projection's backward is one GEMM for the input's
// gradient (K = 3 * hidden) with nothing to sum, one for the stacked weight's (split back by
// cat's backward into views, no copy) and one column sum for the biases. Where recording has
// no fused attention kernel (another device or dtype), select's backward would build a full-size
// gradient per view, so that case keeps three GEMMs.
bool MultiHeadSelfAttention::fuses_projections(const Tensor& x) const {
  for (const auto& projection : {query, key, value}) {
    if (projection->has_forward_hooks() || !projection->bias.defined()) return false;
  }
  return !records_projections(x) || packed_self_attention_fuses(x.device(), x.dtype());
}

bool MultiHeadSelfAttention::records_projections(const Tensor& x) const {
  return autograd::any_requires_grad({&x, &query->weight, &query->bias, &key->weight, &key->bias, &value->weight,
                                      &value->bias});
}

std::pair<Tensor, Tensor> MultiHeadSelfAttention::stacked_projections(bool records) const {
  if (records) {  // under autocast each weight's cast (kept for the region) is stacked, in 16 bits
    auto stack = [](const Tensor& q, const Tensor& k, const Tensor& v) {
      return cat({autocast::to_low_precision(q), autocast::to_low_precision(k), autocast::to_low_precision(v)}, 0);
    };
    return {stack(query->weight, key->weight, value->weight), stack(query->bias, key->bias, value->bias)};
  }
  // Inference: the 16-bit copy is made from the fp32 stack, not from each weight's kept copy, so
  // the weights are held once more in all (not twice).
  const DType dtype = autocast::is_enabled() ? autocast::low_precision_dtype() : query->weight.dtype();
  std::lock_guard<std::mutex> lock(stacked_mutex_);
  auto stack_as = [&](const Tensor& q, const Tensor& k, const Tensor& v) {
    Tensor stacked = cat({q, k, v}, 0);
    return stacked.dtype() == dtype ? stacked : stacked.to(dtype);
  };
  Tensor weight = stacked_weight_.get({&query->weight, &key->weight, &value->weight}, dtype,
                                      [&] { return stack_as(query->weight, key->weight, value->weight); });
  Tensor bias = stacked_bias_.get({&query->bias, &key->bias, &value->bias}, dtype,
                                  [&] { return stack_as(query->bias, key->bias, value->bias); });
  return {weight, bias};
}

Tensor MultiHeadSelfAttention::split_heads(const Tensor& t) const {  // (B, T, hidden) -> (B, heads, T, head_dim)
  return t.view({t.size(0), t.size(1), num_heads, head_dim}).transpose(1, 2);
}

Tensor MultiHeadSelfAttention::merge_heads(const Tensor& context) const {  // (B, heads, T, head_dim) -> (B, T, hidden)
  return context.transpose(1, 2).reshape({context.size(0), context.size(2), hidden_size});
}

Tensor MultiHeadSelfAttention::forward(const Tensor& x, const Tensor& additive_mask) const {
  if (fuses_projections(x)) {
    auto [weight, bias] = stacked_projections(records_projections(x));  // (3 * hidden, hidden), (3 * hidden)
    Tensor qkv = linear(x, weight, bias);                                // (B, T, 3 * hidden)
    return merge_heads(packed_self_attention(qkv, num_heads, additive_mask, attention_dropout, is_training()));
  }
  return forward_leading(x, additive_mask, x.size(1));
}

// Keys and values come from every position, queries from the leading ones alone: the query
// projection and the attention's work shrink by T / positions, and the rest of the layer
// (output dense, LayerNorms, feed-forward) runs on those positions only.
Tensor MultiHeadSelfAttention::forward_leading(const Tensor& x, const Tensor& additive_mask, int64_t positions) const {
  ACCEL_CHECK(x.dim() == 3 && positions >= 1 && positions <= x.size(1), "MultiHeadSelfAttention: expected x of shape "
              "(batch, seq, hidden) and 1 <= query positions <= seq, got x of shape ", x.shape_string(), " and ",
              positions, " query positions");
  Tensor queries = positions == x.size(1) ? x : x.slice(1, 0, positions);  // (B, positions, hidden)
  Tensor context = accel::scaled_dot_product_attention(split_heads(query->forward(queries)),
                                                       split_heads(key->forward(x)), split_heads(value->forward(x)),
                                                       additive_mask, attention_dropout, is_training());
  return merge_heads(context);  // (B, positions, hidden)
}

}  // namespace accel::nn
