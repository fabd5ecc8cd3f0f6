/// @file
/// Backward rules, all in one place (derivatives_*.cc), one function per differentiable op.
/// A forward op computes its output with recording off, then calls record::op(out, inputs...,
/// what it saved). Each function returns at once unless grad mode is on and an input
/// requires grad; otherwise it saves what backward needs and attaches the node to `out`.
/// Rules are written with engine ops where possible and call fused backward kernels for the
/// hot ones (softmax, layer_norm, cross-entropy, GELU).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/kernels.h"
#include "core/ops.h"

namespace accel::autograd::record {

/// @name pointwise (derivatives_pointwise.cc)
/// @{
void add(Tensor& out, const Tensor& a, const Tensor& b, double alpha);  ///< out = a + alpha * b
void mul(Tensor& out, const Tensor& a, const Tensor& b);
void div(Tensor& out, const Tensor& a, const Tensor& b);
void pow(Tensor& out, const Tensor& base, const Tensor& exponent);
void pow_scalar(Tensor& out, const Tensor& base, double exponent);
void maximum(Tensor& out, const Tensor& a, const Tensor& b);
void minimum(Tensor& out, const Tensor& a, const Tensor& b);
void unary(Tensor& out, UnaryOp op, const Tensor& x);
void gelu(Tensor& out, const Tensor& x, bool tanh_approximation);
/// GELU whose forward also produced gelu'(x) (kernels::gelu_with_derivative): saves that, not x.
void gelu_from_derivative(Tensor& out, const Tensor& x, const Tensor& derivative);
void clamp(Tensor& out, const Tensor& x, std::optional<double> min, std::optional<double> max);
void where(Tensor& out, const Tensor& condition, const Tensor& a, const Tensor& b);
void to_dtype(Tensor& out, const Tensor& x);
/// @}

/// @name reductions (derivatives_pointwise.cc)
/// @{
void sum(Tensor& out, const Tensor& x, const Shape& dims, bool keepdim);
void mean(Tensor& out, const Tensor& x, const Shape& dims, bool keepdim);
/// amax/amin and full max/min: the gradient is shared evenly among tied extremes.
void extreme(Tensor& out, const Tensor& x, const Shape& dims, bool keepdim);
/// max/min along a dim: the gradient goes to the returned index.
void extreme_at(Tensor& out, const Tensor& x, int64_t dim, bool keepdim, const Tensor& indices);
void var(Tensor& out, const Tensor& x, const Shape& dims, int64_t correction, bool keepdim);
/// @}

/// @name views (derivatives_tensor.cc)
/// @{
void reshape(Tensor& out, const Tensor& x);
void permute(Tensor& out, const Tensor& x, const Shape& dims);
void expand(Tensor& out, const Tensor& x);
void slice(Tensor& out, const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step);
void select(Tensor& out, const Tensor& x, int64_t dim, int64_t index);
void identity(Tensor& out, const Tensor& x, const char* name);  ///< contiguous, clone
/// @}

/// @name linear algebra, nn, indexing (derivatives_tensor.cc)
/// @{
void bmm(Tensor& out, const Tensor& a, const Tensor& b);  ///< (B, M, K) @ (B, K, N)
void linear(Tensor& out, const Tensor& x, const Tensor& weight, const Tensor& bias);  ///< x 2-D
/// linear_gelu's training node: x (rows, in); derivative (rows, out) = gelu' at the pre-activation.
void linear_gelu(Tensor& out, const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& derivative);
void softmax(Tensor& out, const Tensor& x, int64_t dim, bool log);
void layer_norm(Tensor& out, const Tensor& x, const Tensor& weight, const Tensor& bias,
                const Tensor& mean, const Tensor& rstd, int64_t rows, int64_t cols);
/// The fused add + layer_norm; sum is x + residual as (rows, cols), the normalized input.
void add_layer_norm(Tensor& out, const Tensor& x, const Tensor& residual, const Tensor& sum, const Tensor& weight,
                    const Tensor& bias, const Tensor& mean, const Tensor& rstd, int64_t rows, int64_t cols);
void embedding(Tensor& out, const Tensor& weight, const Tensor& indices, std::optional<int64_t> padding_idx);
void dropout(Tensor& out, const Tensor& x, const Tensor& mask, double scale);
/// The fused attention kernel's node; probs is P before dropout (B, H, Tq, Tk).
void attention(Tensor& out, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& probs, double scale,
               double dropout_p, uint64_t seed, uint64_t offset);
/// packed_self_attention's fused run: one input, the (B, T, 3 * heads * head_dim) projection
/// qkv (float32, contiguous); backward writes the three gradients into one tensor of its shape.
void packed_attention(Tensor& out, const Tensor& qkv, int64_t heads, const Tensor& probs, double scale,
                      double dropout_p, uint64_t seed, uint64_t offset);
void nll_loss(Tensor& out, const Tensor& log_probs, const Tensor& target, const Tensor& weight_per_sample,
              Reduction reduction, double total_weight);
/// The fused cross-entropy kernel's node: logits (rows, C) contiguous, target (rows) int64,
/// logsumexp (rows) from the forward; out is the reduced loss (or the per-row losses), whose
/// derivative by each counted row's loss is grad_scale (1 / count for the mean, else 1).
void cross_entropy(Tensor& out, const Tensor& logits, const Tensor& target, const Tensor& logsumexp,
                   int64_t ignore_index, double label_smoothing, double grad_scale);
void cat(Tensor& out, const std::vector<Tensor>& inputs, int64_t dim);
void index_select(Tensor& out, const Tensor& x, int64_t dim, const Tensor& index);
void gather(Tensor& out, const Tensor& x, int64_t dim, const Tensor& index);
void index_add(Tensor& out, const Tensor& x, int64_t dim, const Tensor& index, const Tensor& source);
void scatter_add(Tensor& out, const Tensor& x, int64_t dim, const Tensor& index, const Tensor& source);
/// @}

}  // namespace accel::autograd::record
