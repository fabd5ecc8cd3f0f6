/// @file
/// Kernel signatures and dispatch slots: the contract between core/ops and the backends.
/// Ops allocate outputs and check arguments; kernels only compute. Strides are in elements
/// and may be anything (broadcast dims have stride 0) unless a comment says otherwise.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <vector>

#include "core/dispatch.h"
#include "core/tensor.h"

namespace accel {

enum class UnaryOp : uint8_t {
  Neg, Abs, Exp, Log, Sqrt, Rsqrt, Tanh, Sigmoid, Relu, Gelu, GeluTanh, Erf, Sign, LogicalNot,
};

enum class BinaryOp : uint8_t {
  Add, Sub, Mul, Div, Pow, Maximum, Minimum,
  Eq, Ne, Lt, Le, Gt, Ge, LogicalAnd, LogicalOr,  ///< out is bool
  /// Fused backward helpers: out = grad * f'(x) with a = grad, b = x (or the forward output).
  GeluBackward, GeluTanhBackward, TanhBackward /* b = tanh(x) */,
  SigmoidBackward /* b = sigmoid(x) */, ReluBackward /* b = relu(x) */,
};

enum class ReduceOp : uint8_t { Sum, Mean, Max, Min, ArgMax, ArgMin, Var };

enum class RandomKind : uint8_t { Uniform, Normal };

/// What a GEMM's b is to its caller. Transient: anything a step may change before the next
/// call (activations, gradients, weights while training). InferenceWeight: the b of a product
/// autograd does not record, which the CPU backend keeps in oneDNN's packed layout once it sees
/// it again unchanged (core/weight_packing.h); a Transient use drops such a copy.
enum class GemmB : uint8_t { Transient, InferenceWeight };

namespace kernels {

/// out = op(in); in and out have the same shape; dtypes equal except LogicalNot (out bool).
using UnaryFn = void(UnaryOp op, const Tensor& in, const Tensor& out);
/// out = op(a, b); a and b already expanded to out's shape and converted to one dtype.
using BinaryFn = void(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out);
/// The training forward of GELU (erf form, or tanh form): out = gelu(x) and derivative =
/// gelu'(x), all of one shape and dtype, in one pass. Autograd saves the derivative instead of x,
/// so the backward is grad * derivative: one multiply where it would evaluate erf and exp again
/// (bitwise the same float32 result; 16-bit floats round the derivative once more).
/// bias (cols), when defined, is added to each row of a contiguous float32 x (rows, cols) first:
/// the training forward of linear_gelu runs its GEMM without a bias epilogue and adds it here.
using GeluWithDerivativeFn = void(const Tensor& x, const Tensor& bias, bool tanh_form, const Tensor& out,
                                  const Tensor& derivative);
/// out = a * b and column_sum = out summed over rows, for contiguous a, b, out (rows, cols) and
/// column_sum (cols) of one floating dtype, in one pass (linear_gelu's backward: the gradient
/// at the GELU's input and its bias's gradient). The sums accumulate in double over fixed
/// blocks of rows added in order, so they do not depend on the thread count.
using MulColumnSumFn = void(const Tensor& a, const Tensor& b, const Tensor& out, const Tensor& column_sum);
/// out = a + alpha * b (the fused form of add/sub with alpha, used by optimizers too).
using AddScaledFn = void(const Tensor& a, const Tensor& b, double alpha, const Tensor& out);
/// out = cond ? a : b; all expanded to out's shape.
using WhereFn = void(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out);
using ClampFn = void(const Tensor& in, std::optional<double> min, std::optional<double> max, const Tensor& out);
/// dst = src converted to dst's dtype; same shapes, any strides (copy_, contiguous, to(dtype)).
using CopyFn = void(const Tensor& src, const Tensor& dst);
using FillFn = void(const Tensor& dst, Scalar value);
/// dst[i] = start + i * step for contiguous dst.
using ArangeFn = void(const Tensor& dst, double start, double step);
/// Reduces `in` over `dims` (sorted, unique) into out (keepdim shape: size 1 on reduced dims).
/// Max/Min also write `indices` (int64, same shape as out) when defined; ArgMax/ArgMin write
/// only out (int64). Var uses `correction`.
using ReduceFn = void(ReduceOp op, const Tensor& in, const Shape& dims, const Tensor& out,
                      const Tensor& indices, int64_t correction);
/// out (B, M, N) = a (B, M, K) @ b (B, K, N) [+ bias (N)]; a and b may be transposed views or
/// have batch stride 0; out is contiguous. beta = 1 accumulates into out instead.
using MatmulFn = void(const Tensor& a, const Tensor& b, const Tensor& bias, const Tensor& out, bool accumulate,
                      GemmB b_use);
/// out (B, M, N) = gelu(a @ b + bias) with erf GELU, in one GEMM with a fused epilogue
/// (inference: backward needs the pre-activation this never stores, so b is an
/// InferenceWeight). Layouts as MatmulFn.
using LinearGeluFn = void(const Tensor& a, const Tensor& b, const Tensor& bias, const Tensor& out);
/// Fused attention, per (batch, head): S = scale * q k^T + mask, P = softmax(S) over keys,
/// out = dropout(P) v. q, out (B, H, Tq, D) and k, v (B, H, Tk, D) with any strides but unit
/// stride on D; mask expanded to (B, H, Tq, Tk) (stride 0 where broadcast) or undefined.
/// Dropout keeps element i of P (row-major over (B, H, Tq, Tk)) when uniform_i >= p, uniform_i
/// from the Philox draw (seed, offset), so it draws exactly what dropout() on P would.
/// probs (B, H, Tq, Tk) contiguous receives P before dropout when defined (for backward), in
/// the backend's own encoding for its backward: the CPU kernel sets the sign bit of each
/// element dropout dropped (P >= 0, so |probs| is P), and its backward reads the draw from
/// there instead of running Philox again; the CUDA kernel stores P and redraws.
using AttentionFn = void(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, double scale,
                         double dropout_p, uint64_t seed, uint64_t offset, const Tensor& out, const Tensor& probs);
/// Gradients of AttentionFn from its saved probs (and the same dropout draw): grad_out like out;
/// grad_q, grad_k, grad_v like q, k, v (any strides, unit stride on D).
using AttentionBackwardFn = void(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
                                 const Tensor& probs, double scale, double dropout_p, uint64_t seed, uint64_t offset,
                                 const Tensor& grad_q, const Tensor& grad_k, const Tensor& grad_v);
/// The attention kernels compute in float32. q, k, v and their gradients may also be 16-bit
/// floats (autocast's projections, read and written as they are), all of one dtype; mask, out,
/// probs and grad_out are float32. Each backend's kernel calls this first, so that a direct
/// caller of the slot gets an error, not garbage.
void check_attention_dtypes(const char* op, std::initializer_list<const Tensor*> heads,
                            std::initializer_list<const Tensor*> float32_only);
/// The packed projection of packed_self_attention and its backward: qkv (B, T, 3 * heads * D)
/// holds query, key and value side by side in each row; which = 0, 1, 2 gives that one as a
/// (B, heads, T, D) view, unit stride on D.
inline Tensor packed_attention_head(const Tensor& qkv, int64_t heads, int64_t which) {
  const int64_t B = qkv.size(0), T = qkv.size(1), D = qkv.size(2) / (3 * heads);
  return qkv.view({B, T, 3, heads, D}).select(2, which).transpose(1, 2);
}
/// Softmax over dim of a contiguous tensor; log selects log_softmax.
using SoftmaxFn = void(const Tensor& in, int64_t dim, bool log, const Tensor& out);
/// grad_in = softmax backward from the forward output `out` and grad `grad`.
using SoftmaxBackwardFn = void(const Tensor& grad, const Tensor& out, int64_t dim, bool log, const Tensor& grad_in);
/// Fused cross-entropy over the rows of logits (rows, C), contiguous; target (rows) int64
/// contiguous, each value in [0, C) or ignore_index (the op checked). Per row, in float32
/// (float64 for float64 logits), with lse = log(sum_c exp(x_c)) taken around the row max and
/// s = label_smoothing:
/// @verbatim
///   losses[r] = (1 - s) (lse - x[t]) + s / C * sum_c (lse - x_c)     (0 where t == ignore_index)
/// @endverbatim
/// losses and logsumexp (rows) are float32 (float64 for float64 logits); logsumexp receives
/// lse for the backward (0 for an ignored row, which backward never reads).
using CrossEntropyFn = void(const Tensor& logits, const Tensor& target, int64_t ignore_index, double label_smoothing,
                            const Tensor& losses, const Tensor& logsumexp);
/// Gradient of CrossEntropyFn's losses, scaled: with g = grad_losses[r] * scale (grad_losses
/// (rows), or one element for every row, contiguous, in the dtype of logsumexp),
/// @verbatim
///   grad_logits[r, c] = g * (exp(x_c - lse[r]) - s / C - (1 - s) [c == t])   (0 where t == ignore_index)
/// @endverbatim
/// grad_logits (rows, C) contiguous, in the dtype of logits.
using CrossEntropyBackwardFn = void(const Tensor& grad_losses, double scale, const Tensor& logits,
                                    const Tensor& target, const Tensor& logsumexp, int64_t ignore_index,
                                    double label_smoothing, const Tensor& grad_logits);
/// x (rows, cols) contiguous; weight/bias (cols) optional; mean/rstd (rows) float32 or float64.
using LayerNormFn = void(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps,
                         const Tensor& out, const Tensor& mean, const Tensor& rstd);
/// layer_norm(x + residual): x, residual (rows, cols) contiguous, one dtype; sum (rows, cols)
/// receives x + residual (rounded to the dtype, as add would) when defined, for backward.
using AddLayerNormFn = void(const Tensor& x, const Tensor& residual, const Tensor& weight, const Tensor& bias,
                            double eps, const Tensor& out, const Tensor& sum, const Tensor& mean, const Tensor& rstd);
using LayerNormBackwardFn = void(const Tensor& grad, const Tensor& x, const Tensor& weight,
                                 const Tensor& mean, const Tensor& rstd, const Tensor& grad_x,
                                 const Tensor& grad_weight, const Tensor& grad_bias);
/// out = x.index_select(dim, index); index 1-D int64/int32, bounds already checked.
using IndexSelectFn = void(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out);
/// out.index_add_(dim, index, source) in place.
using IndexAddFn = void(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& source);
/// out = x.gather(dim, index) with index's shape.
using GatherFn = void(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out);
/// out.scatter_add_(dim, index, source) in place.
using ScatterAddFn = void(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& source);
/// Fills contiguous dst from the Philox stream (seed, offset) described in core/random.h.
using RandomFn = void(const Tensor& dst, RandomKind kind, uint64_t seed, uint64_t offset, double a, double b);
/// One AdamW step (PyTorch semantics) over contiguous tensors of one shape, in place:
/// @verbatim
///   p -= lr * wd * p;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
///   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
/// @endverbatim
struct AdamWHyper {
  double lr, beta1, beta2, eps, weight_decay;
  int64_t step;  ///< t, counted from 1
};
using AdamWFn = void(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                     const AdamWHyper& hyper);
/// One tensor set of AdamWMultiTensorFn: param, grad, exp_avg and exp_avg_sq, contiguous, of
/// one shape.
struct AdamWTensors {
  Tensor param, grad, exp_avg, exp_avg_sq;
};
/// AdamWFn's update, element for element the same arithmetic (bitwise equal results), over
/// many tensor sets of one dtype on one device that share the hyperparameters and the step,
/// in one parallel loop (CPU) or a few launches (CUDA) instead of one per tensor.
using AdamWMultiTensorFn = void(const std::vector<AdamWTensors>& tensors, const AdamWHyper& hyper);
/// Dropout in one pass over contiguous x: keep[i] = (uniform_i >= p) with uniform_i element i
/// of the Philox draw (seed, offset) exactly as rand() would give it; out = x * keep / (1 - p);
/// mask (bool) records keep for backward.
using DropoutFn = void(const Tensor& x, double p, uint64_t seed, uint64_t offset, const Tensor& out, const Tensor& mask);
/// grad_in = grad * mask * scale, all contiguous.
using DropoutBackwardFn = void(const Tensor& grad, const Tensor& mask, double scale, const Tensor& grad_in);
/// The sum of the squares of every element of many contiguous floating tensors of one dtype on
/// one device (a gradient norm), each square and the sums in double, over fixed chunks added in
/// order, so the result depends on neither the thread count nor the launch: `out` is a float64
/// scalar on that device. One call where the composition allocated and summed g * g per tensor.
using SumOfSquaresFn = void(const std::vector<Tensor>& tensors, const Tensor& out);
/// Copies bytes between devices (host<->device); same dtype and shape, both contiguous.
using CrossDeviceCopyFn = void(const Tensor& src, const Tensor& dst);

inline constinit KernelSlot<UnaryFn> unary{"unary", "K unary"};
inline constinit KernelSlot<BinaryFn> binary{"binary", "K binary"};
inline constinit KernelSlot<GeluWithDerivativeFn> gelu_with_derivative{"gelu_with_derivative",
                                                                       "K gelu_with_derivative"};
inline constinit KernelSlot<MulColumnSumFn> mul_column_sum{"mul_column_sum", "K mul_column_sum"};
inline constinit KernelSlot<AddScaledFn> add_scaled{"add_scaled", "K add_scaled"};
inline constinit KernelSlot<WhereFn> where{"where", "K where"};
inline constinit KernelSlot<ClampFn> clamp{"clamp", "K clamp"};
inline constinit KernelSlot<CopyFn> copy{"copy", "K copy"};
inline constinit KernelSlot<FillFn> fill{"fill", "K fill"};
inline constinit KernelSlot<ArangeFn> arange{"arange", "K arange"};
inline constinit KernelSlot<ReduceFn> reduce{"reduce", "K reduce"};
inline constinit KernelSlot<MatmulFn> matmul{"matmul", "K matmul"};
inline constinit KernelSlot<LinearGeluFn> linear_gelu{"linear_gelu", "K linear_gelu"};
inline constinit KernelSlot<AttentionFn> attention{"attention", "K attention"};
inline constinit KernelSlot<AttentionBackwardFn> attention_backward{"attention_backward", "K attention_backward"};
inline constinit KernelSlot<SoftmaxFn> softmax{"softmax", "K softmax"};
inline constinit KernelSlot<SoftmaxBackwardFn> softmax_backward{"softmax_backward", "K softmax_backward"};
inline constinit KernelSlot<CrossEntropyFn> cross_entropy{"cross_entropy", "K cross_entropy"};
inline constinit KernelSlot<CrossEntropyBackwardFn> cross_entropy_backward{"cross_entropy_backward",
                                                                           "K cross_entropy_backward"};
inline constinit KernelSlot<LayerNormFn> layer_norm{"layer_norm", "K layer_norm"};
inline constinit KernelSlot<LayerNormBackwardFn> layer_norm_backward{"layer_norm_backward", "K layer_norm_backward"};
inline constinit KernelSlot<AddLayerNormFn> add_layer_norm{"add_layer_norm", "K add_layer_norm"};
inline constinit KernelSlot<IndexSelectFn> index_select{"index_select", "K index_select"};
inline constinit KernelSlot<IndexAddFn> index_add{"index_add", "K index_add"};
inline constinit KernelSlot<GatherFn> gather{"gather", "K gather"};
inline constinit KernelSlot<ScatterAddFn> scatter_add{"scatter_add", "K scatter_add"};
inline constinit KernelSlot<RandomFn> random{"random", "K random"};
inline constinit KernelSlot<DropoutFn> dropout{"dropout", "K dropout"};
inline constinit KernelSlot<DropoutBackwardFn> dropout_backward{"dropout_backward", "K dropout_backward"};
inline constinit KernelSlot<AdamWFn> adamw{"adamw", "K adamw"};
inline constinit KernelSlot<AdamWMultiTensorFn> adamw_multi_tensor{"adamw_multi_tensor", "K adamw_multi_tensor"};
inline constinit KernelSlot<SumOfSquaresFn> sum_of_squares{"sum_of_squares", "K sum_of_squares"};
inline constinit KernelSlot<CrossDeviceCopyFn> cross_device_copy{"cross_device_copy", "K cross_device_copy"};

}  // namespace kernels
}  // namespace accel
