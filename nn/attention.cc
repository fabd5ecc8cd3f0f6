// Self-attention: projections, head split/merge as views, and the attention itself (core's
// scaled_dot_product_attention, fused where the backend can).
#include "nn/attention.h"

#include <limits>

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

Tensor MultiHeadSelfAttention::forward(const Tensor& x, const Tensor& additive_mask) const {
  const int64_t B = x.size(0), T = x.size(1);
  auto split_heads = [&](const Tensor& t) {  // (B, T, hidden) -> (B, heads, T, head_dim)
    return t.view({B, T, num_heads, head_dim}).transpose(1, 2);
  };
  Tensor q = split_heads(query->forward(x));
  Tensor k = split_heads(key->forward(x));
  Tensor v = split_heads(value->forward(x));
  Tensor context = accel::scaled_dot_product_attention(q, k, v, additive_mask, attention_dropout, is_training());
  return context.transpose(1, 2).reshape({B, T, hidden_size});  // merge heads
}

}  // namespace accel::nn
