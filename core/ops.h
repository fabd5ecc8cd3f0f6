/// @file
/// The tensor op API: free functions with LibTorch names and semantics. Each op checks its
/// arguments (errors name the op and show the shapes), dispatches to the kernel registered
/// for the tensors' device, and records an autograd node when an input requires grad.
/// Implementations: core/ops/*.cc; backward rules: core/autograd/derivatives*.cc.
#pragma once

#include <optional>
#include <vector>

#include "core/tensor.h"

namespace accel {

/// @name factories (core/ops/factory.cc)
/// @{
struct TensorOptions {
  DType dtype = kFloat32;
  Device device = kCPU;
  bool requires_grad = false;
  TensorOptions() = default;
  TensorOptions(DType dtype) : dtype(dtype) {}
  TensorOptions(Device device) : device(device) {}
  TensorOptions(DType dtype, Device device) : dtype(dtype), device(device) {}
};
Tensor empty(const Shape& sizes, TensorOptions options = {});
Tensor zeros(const Shape& sizes, TensorOptions options = {});
Tensor ones(const Shape& sizes, TensorOptions options = {});
Tensor full(const Shape& sizes, Scalar value, TensorOptions options = {});
Tensor empty_like(const Tensor& t);
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
Tensor full_like(const Tensor& t, Scalar value);
/// [start, end) in steps of step; dtype int64 when all arguments are integers.
Tensor arange(Scalar end, std::optional<DType> dtype = std::nullopt);
Tensor arange(Scalar start, Scalar end, Scalar step = 1, std::optional<DType> dtype = std::nullopt);
/// Copies values (converted to dtype) into a new tensor of the given shape.
template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& sizes, std::optional<DType> dtype = std::nullopt);
template <typename T>
Tensor from_vector(const std::vector<T>& values) {
  return from_vector(values, Shape{static_cast<int64_t>(values.size())});
}
/// Copies nbytes from a raw buffer laid out contiguously as dtype.
Tensor from_blob_copy(const void* data, const Shape& sizes, DType dtype);
Tensor scalar_tensor(Scalar value, DType dtype, Device device = kCPU);
/// @}

/// @name random (core/random.h documents the Philox stream)
/// @{
class Generator;
Tensor rand(const Shape& sizes, TensorOptions options = {}, Generator* generator = nullptr);
Tensor randn(const Shape& sizes, TensorOptions options = {}, Generator* generator = nullptr);
/// Integers uniform in [low, high).
Tensor randint(int64_t low, int64_t high, const Shape& sizes, TensorOptions options = kInt64,
               Generator* generator = nullptr);
void manual_seed(uint64_t seed);
/// @}

/// @name pointwise (core/ops/pointwise.cc)
/// @{
Tensor add(const Tensor& a, const Tensor& b, Scalar alpha = 1);
Tensor sub(const Tensor& a, const Tensor& b, Scalar alpha = 1);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor pow(const Tensor& base, const Tensor& exponent);
Tensor pow(const Tensor& base, Scalar exponent);
Tensor maximum(const Tensor& a, const Tensor& b);
Tensor minimum(const Tensor& a, const Tensor& b);
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
Tensor logical_and(const Tensor& a, const Tensor& b);
Tensor logical_or(const Tensor& a, const Tensor& b);
Tensor logical_not(const Tensor& a);
Tensor neg(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor relu(const Tensor& x);
/// approximate: "none" is the exact erf form, "tanh" the tanh approximation (gelu_new).
Tensor gelu(const Tensor& x, const std::string& approximate = "none");
Tensor erf(const Tensor& x);
Tensor clamp(const Tensor& x, std::optional<Scalar> min, std::optional<Scalar> max = std::nullopt);
/// out[i] = condition[i] ? a[i] : b[i], broadcasting all three.
Tensor where(const Tensor& condition, const Tensor& a, const Tensor& b);
Tensor where(const Tensor& condition, const Tensor& a, Scalar b);
Tensor masked_fill(const Tensor& x, const Tensor& mask, Scalar value);
/// A tensor holding `value` with x's dtype and device, for scalar overloads.
Tensor wrap_scalar(Scalar value, const Tensor& like);
/// @}

/// @name reductions (core/ops/reduce.cc); an empty dims list reduces over all dims
/// @{
Tensor sum(const Tensor& x, const Shape& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const Shape& dims = {}, bool keepdim = false);
struct ValuesIndices {
  Tensor values;
  Tensor indices;
};
ValuesIndices max(const Tensor& x, int64_t dim, bool keepdim = false);
ValuesIndices min(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor max(const Tensor& x);  ///< over all elements
Tensor min(const Tensor& x);
Tensor amax(const Tensor& x, const Shape& dims = {}, bool keepdim = false);
Tensor amin(const Tensor& x, const Shape& dims = {}, bool keepdim = false);
Tensor argmax(const Tensor& x, std::optional<int64_t> dim = std::nullopt, bool keepdim = false);
Tensor argmin(const Tensor& x, std::optional<int64_t> dim = std::nullopt, bool keepdim = false);
/// Bessel-corrected by `correction` (1 = unbiased, as torch.var's default).
Tensor var(const Tensor& x, const Shape& dims = {}, int64_t correction = 1, bool keepdim = false);
Tensor std(const Tensor& x, const Shape& dims = {}, int64_t correction = 1, bool keepdim = false);
/// Sums a gradient back to `shape` after broadcasting (used by backward rules).
Tensor sum_to(const Tensor& x, const Shape& shape);
/// The sum of the squares of every element of every tensor (floating, all on one device), in
/// double: a float64 scalar on that device, so a gradient norm costs one read of the gradients
/// and one synchronization (torch._foreach_norm's role). Not recorded for autograd.
Tensor sum_of_squares(const std::vector<Tensor>& tensors);
/// @}

/// @name linear algebra (core/ops/linalg.cc)
/// @{
/// torch.matmul: 1-D dot, 2-D matrix product, batched with broadcast batch dims.
Tensor matmul(const Tensor& a, const Tensor& b);
/// x (..., in) @ weight (out, in)^T + bias (out) -> (..., out), one GEMM call.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());
/// gelu(linear(x, weight, bias)) with erf GELU. Without recording (inference, or nothing
/// requires grad) it is one GEMM with a fused GELU epilogue where the backend has one;
/// otherwise, and on other backends, exactly linear then gelu.
Tensor linear_gelu(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());
/// @}

/// @name neural-network functions (core/ops/nn.cc)
/// @{
Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);
/// Normalizes over the trailing normalized_shape dims; weight and bias are optional.
Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight = Tensor(),
                  const Tensor& bias = Tensor(), double eps = 1e-5);
/// layer_norm(x + residual, ...), the residual connection of a transformer block, in one pass
/// over the rows where the backend has the kernel (the sum is written only when backward
/// needs it); otherwise, or when x and residual differ in shape, add then layer_norm.
Tensor add_layer_norm(const Tensor& x, const Tensor& residual, const Shape& normalized_shape,
                      const Tensor& weight = Tensor(), const Tensor& bias = Tensor(), double eps = 1e-5);
/// weight (num_embeddings, dim); indices int64/int32 of any shape -> (*indices.shape, dim).
/// Rows at padding_idx receive no gradient.
Tensor embedding(const Tensor& weight, const Tensor& indices, std::optional<int64_t> padding_idx = std::nullopt);
/// Zeroes each element with probability p and scales the rest by 1/(1-p) when training.
Tensor dropout(const Tensor& x, double p, bool training, Generator* generator = nullptr);
/// Scaled dot-product attention: dropout(softmax(scale * q k^T + additive_mask)) v.
/// q (B, H, Tq, D), k and v (B, H, Tk, D), additive_mask broadcastable to (B, H, Tq, Tk) or
/// undefined -> (B, H, Tq, D). Where a backend has the fused kernel (float32; CPU and CUDA) the
/// probabilities are computed per (batch, head) in cache, never as separate scaled, masked
/// and softmaxed tensors, and the result is a (B, H, Tq, D) view of a (B, Tq, H, D) buffer,
/// so merging heads back is free; under autocast it reads 16-bit q, k and v as they are,
/// computes in fp32 and returns fp32. Otherwise (another dtype or device, a mask that requires grad), or with
/// fused = false, it is the composition of matmul, mul, add, softmax, dropout and matmul.
/// Both draw the same dropout mask from the generator.
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const Tensor& additive_mask = Tensor(), double dropout_p = 0.0,
                                    bool training = false, std::optional<double> scale = std::nullopt,
                                    bool fused = true, Generator* generator = nullptr);
/// Self-attention on one stacked projection: qkv (B, T, 3 * heads * head_dim) holds query, key
/// and value side by side along its last dim (as a Linear on the three weights concatenated
/// writes them) -> (B, heads, T, head_dim), as scaled_dot_product_attention on the three head-split
/// views. Recording with the fused kernel, its backward writes the gradients of query, key and
/// value into one (B, T, 3 * heads * head_dim) tensor, so the stacked projection's backward is
/// one GEMM and nothing is summed; otherwise it is scaled_dot_product_attention on the views.
Tensor packed_self_attention(const Tensor& qkv, int64_t heads, const Tensor& additive_mask = Tensor(),
                             double dropout_p = 0.0, bool training = false,
                             std::optional<double> scale = std::nullopt, Generator* generator = nullptr);
/// Whether packed_self_attention records through the fused kernel for a projection computed
/// from an input of this device and dtype (float32, or a 16-bit float under autocast).
bool packed_self_attention_fuses(Device device, DType dtype);
enum class Reduction { None, Mean, Sum };
/// torch.nn.functional.cross_entropy: logits (C), (N, C) or (N, C, d1, ...), target class
/// indices (), (N) or (N, d1, ...), int64 or int32, each in [0, C) or ignore_index. The mean
/// is over the targets not ignored; label smoothing mixes in the mean of -log p over classes.
/// By default one fused kernel computes each sample's log-sum-exp and loss (fp32 statistics
/// for 16-bit logits) and the backward writes softmax - smoothed one-hot in one pass, never
/// materializing log_softmax; N-d logits are moved to (samples, C) rows first (a copy).
/// fused = false, or a device without the kernel, takes the composition log_softmax then
/// nll_loss. Under autocast it runs in fp32 and returns fp32; otherwise the loss has the
/// logits' dtype.
Tensor cross_entropy(const Tensor& logits, const Tensor& target, int64_t ignore_index = -100,
                     Reduction reduction = Reduction::Mean, double label_smoothing = 0.0, bool fused = true);
Tensor nll_loss(const Tensor& log_probs, const Tensor& target, int64_t ignore_index = -100,
                Reduction reduction = Reduction::Mean);
Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::Mean);
/// @}

/// @name joining and indexing (core/ops/indexing.cc)
/// @{
Tensor cat(const std::vector<Tensor>& tensors, int64_t dim = 0);
Tensor stack(const std::vector<Tensor>& tensors, int64_t dim = 0);
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);
/// out = x with out[..., index[i], ...] += source[..., i, ...] along dim.
Tensor index_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& source);
/// out = x with out[index[i][j]][j] += source[i][j] (dim 0 shown), like torch.scatter_add.
Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& source);
Tensor one_hot(const Tensor& indices, int64_t num_classes = -1);
/// @}

/// @name conversion
/// @{
Tensor to_dtype(const Tensor& x, DType dtype);
Tensor to_device(const Tensor& x, Device device);
/// @}

/// @name comparison helpers for tests and users
/// @{
bool allclose(const Tensor& a, const Tensor& b, double rtol = 1e-5, double atol = 1e-8);
bool equal(const Tensor& a, const Tensor& b);
/// @}

}  // namespace accel
