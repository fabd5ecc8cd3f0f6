// CUDA softmax and log_softmax over one dim, forward and backward, and layer norm forward
// and backward, also of x + residual (add_layer_norm, the fused residual connection). The
// softmax tensor is viewed as (outer, D, inner) with the softmax dim in the middle; one block
// per (outer, inner) row, statistics in float (double for float64) combined with warp
// shuffles. Layer norm: x (rows, cols), one block per row, fp32 statistics (double for
// float64), mean and rstd saved; add_layer_norm rounds x + residual to the dtype as add
// would, normalizes that, and saves it for backward, which is layer norm's. The weight and
// bias gradients are column sums in double, one thread per column, as the CPU's.
#include <cmath>

#include "backends/cuda/device_utils.cuh"
#include "backends/cuda/math.cuh"
#include "core/kernels.h"

namespace accel::cuda {

namespace {

template <typename T>
using stat_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

struct RowGeometry {
  int64_t outer, D, inner;
};
RowGeometry geometry(const Tensor& t, int64_t dim) {
  RowGeometry g{1, t.size(dim), 1};
  for (int64_t d = 0; d < dim; ++d) g.outer *= t.size(d);
  for (int64_t d = dim + 1; d < t.dim(); ++d) g.inner *= t.size(d);
  return g;
}

template <typename T>
__global__ void softmax_kernel_device(const T* x, T* y, RowGeometry g, bool log) {
  using M = stat_t<T>;
  __shared__ M shared[32];
  for (int64_t r = blockIdx.x; r < g.outer * g.inner; r += gridDim.x) {
    const int64_t base = (r / g.inner) * g.D * g.inner + r % g.inner;
    M max_value = -INFINITY;
    for (int64_t d = threadIdx.x; d < g.D; d += blockDim.x) max_value = fmax(max_value, M(load_compute(x[base + d * g.inner])));
    max_value = block_reduce(max_value, MaxOp{}, M(-INFINITY), shared);
    if (isinf(max_value) && max_value < 0) max_value = 0;  // all -inf: avoid NaN from inf - inf
    M sum = 0;
    for (int64_t d = threadIdx.x; d < g.D; d += blockDim.x) sum += dexp(M(load_compute(x[base + d * g.inner])) - max_value);
    sum = block_reduce(sum, SumOp{}, M(0), shared);
    const M log_sum = dlog(sum), inv = M(1) / sum;
    for (int64_t d = threadIdx.x; d < g.D; d += blockDim.x) {
      const M shifted = M(load_compute(x[base + d * g.inner])) - max_value;
      y[base + d * g.inner] = store_compute<T>(log ? shifted - log_sum : dexp(shifted) * inv);
    }
  }
}

// softmax:     grad_in = y * (grad - sum(grad * y))
// log_softmax: grad_in = grad - exp(y) * sum(grad)
template <typename T>
__global__ void softmax_backward_kernel_device(const T* dy, const T* y, T* dx, RowGeometry g, bool log) {
  using M = stat_t<T>;
  __shared__ M shared[32];
  for (int64_t r = blockIdx.x; r < g.outer * g.inner; r += gridDim.x) {
    const int64_t base = (r / g.inner) * g.D * g.inner + r % g.inner;
    M dot = 0;
    for (int64_t d = threadIdx.x; d < g.D; d += blockDim.x) {
      const int64_t k = base + d * g.inner;
      dot += log ? M(load_compute(dy[k])) : M(load_compute(dy[k])) * M(load_compute(y[k]));
    }
    dot = block_reduce(dot, SumOp{}, M(0), shared);
    for (int64_t d = threadIdx.x; d < g.D; d += blockDim.x) {
      const int64_t k = base + d * g.inner;
      const M g_k = M(load_compute(dy[k])), y_k = M(load_compute(y[k]));
      dx[k] = store_compute<T>(log ? g_k - dexp(y_k) * dot : y_k * (g_k - dot));
    }
  }
}

void softmax_kernel(const Tensor& in, int64_t dim, bool log, const Tensor& out) {
  RowGeometry g = geometry(in, dim);
  if (in.numel() == 0) return;
  visit_floating_device(in.dtype(), log ? "log_softmax" : "softmax", [&]<typename T>() {
    KernelContext context(in);
    softmax_kernel_device<T><<<row_blocks(g.outer * g.inner), threads_per_row(g.D), 0, context.stream>>>(
        device_ptr<const T>(in), device_ptr<T>(out), g, log);
    ACCEL_CUDA_CHECK_LAUNCH();
  });
}

void softmax_backward_kernel(const Tensor& grad, const Tensor& out, int64_t dim, bool log, const Tensor& grad_in) {
  RowGeometry g = geometry(out, dim);
  if (out.numel() == 0) return;
  visit_floating_device(out.dtype(), log ? "log_softmax_backward" : "softmax_backward", [&]<typename T>() {
    KernelContext context(out);
    softmax_backward_kernel_device<T><<<row_blocks(g.outer * g.inner), threads_per_row(g.D), 0, context.stream>>>(
        device_ptr<const T>(grad), device_ptr<const T>(out), device_ptr<T>(grad_in), g, log);
    ACCEL_CUDA_CHECK_LAUNCH();
  });
}

// Element i of what is normalized: x, or x + residual rounded to T as add would round it
// (each pass recomputes the same rounded sum, so every pass sees the same value).
template <typename T>
__device__ __forceinline__ stat_t<T> normalized_input(const T* x, const T* residual, int64_t i) {
  using M = stat_t<T>;
  if (residual == nullptr) return M(load_compute(x[i]));
  return M(load_compute(store_compute<T>(M(load_compute(x[i])) + M(load_compute(residual[i])))));
}

// Layer norm of x, or of x + residual when residual is given (add_layer_norm), which then
// writes the rounded sum to sum_out when that is given, for backward.
template <typename T>
__global__ void layer_norm_kernel_device(const T* x, const T* residual, const T* w, const T* b, double eps, T* y,
                                         T* sum_out, stat_t<T>* mean, stat_t<T>* rstd, int64_t rows, int64_t cols) {
  using M = stat_t<T>;
  __shared__ M shared[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t first = r * cols;
    M sum = 0;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const M v = normalized_input(x, residual, first + c);
      if (sum_out) sum_out[first + c] = store_compute<T>(v);
      sum += v;
    }
    const M mu = block_reduce(sum, SumOp{}, M(0), shared) / M(cols);
    M squares = 0;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const M d = normalized_input(x, residual, first + c) - mu;
      squares += d * d;
    }
    squares = block_reduce(squares, SumOp{}, M(0), shared);
    const M rs = M(1) / dsqrt(squares / M(cols) + M(eps));
    if (threadIdx.x == 0) {
      mean[r] = mu;
      rstd[r] = rs;
    }
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      M v = (normalized_input(x, residual, first + c) - mu) * rs;
      if (w) v = v * M(load_compute(w[c]));
      if (b) v = v + M(load_compute(b[c]));
      y[first + c] = store_compute<T>(v);
    }
  }
}

//   dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),  dxhat = dy * w
template <typename T>
__global__ void layer_norm_grad_x_kernel(const T* dy, const T* x, const T* w, const stat_t<T>* mean,
                                         const stat_t<T>* rstd, T* dx, int64_t rows, int64_t cols) {
  using M = stat_t<T>;
  __shared__ M shared[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const M mu = mean[r], rs = rstd[r];
    M sum_dxhat = 0, sum_dxhat_xhat = 0;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const M dxhat = M(load_compute(dy[r * cols + c])) * (w ? M(load_compute(w[c])) : M(1));
      const M xhat = (M(load_compute(x[r * cols + c])) - mu) * rs;
      sum_dxhat += dxhat;
      sum_dxhat_xhat += dxhat * xhat;
    }
    const M mean_dxhat = block_reduce(sum_dxhat, SumOp{}, M(0), shared) / M(cols);
    const M mean_dxhat_xhat = block_reduce(sum_dxhat_xhat, SumOp{}, M(0), shared) / M(cols);
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const M dxhat = M(load_compute(dy[r * cols + c])) * (w ? M(load_compute(w[c])) : M(1));
      const M xhat = (M(load_compute(x[r * cols + c])) - mu) * rs;
      dx[r * cols + c] = store_compute<T>(rs * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat));
    }
  }
}

template <typename T>
__global__ void layer_norm_grad_params_kernel(const T* dy, const T* x, const stat_t<T>* mean, const stat_t<T>* rstd,
                                              T* dw, T* db, int64_t rows, int64_t cols) {
  using M = stat_t<T>;
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < cols; c += int64_t(gridDim.x) * blockDim.x) {
    double sum_w = 0, sum_b = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const M g = M(load_compute(dy[r * cols + c]));
      sum_w += double(g * (M(load_compute(x[r * cols + c])) - mean[r]) * rstd[r]);
      sum_b += double(g);
    }
    if (dw) dw[c] = store_compute<T>(static_cast<M>(sum_w));
    if (db) db[c] = store_compute<T>(static_cast<M>(sum_b));
  }
}

template <typename T>
const T* optional_ptr(const Tensor& t) { return t.defined() ? device_ptr<const T>(t) : nullptr; }
template <typename T>
T* optional_mutable_ptr(const Tensor& t) { return t.defined() ? device_ptr<T>(t) : nullptr; }

void check_stats_dtype(const Tensor& stats, DType x_dtype) {
  const DType expected = x_dtype == kFloat64 ? kFloat64 : kFloat32;
  ACCEL_CHECK(stats.dtype() == expected, "layer_norm on cuda: mean/rstd must be ", dtype_name(expected), " for ",
              dtype_name(x_dtype), " input, got ", dtype_name(stats.dtype()));
}

// Forward of layer_norm (residual undefined) and of add_layer_norm.
void normalize_rows(const char* op, const Tensor& x, const Tensor& residual, const Tensor& weight, const Tensor& bias,
                    double eps, const Tensor& out, const Tensor& sum, const Tensor& mean, const Tensor& rstd) {
  const int64_t rows = x.size(0), cols = x.size(1);
  if (rows == 0) return;
  check_stats_dtype(mean, x.dtype());
  visit_floating_device(x.dtype(), op, [&]<typename T>() {
    using M = stat_t<T>;
    KernelContext context(x);
    layer_norm_kernel_device<T><<<row_blocks(rows), threads_per_row(cols), 0, context.stream>>>(
        device_ptr<const T>(x), optional_ptr<T>(residual), optional_ptr<T>(weight), optional_ptr<T>(bias), eps,
        device_ptr<T>(out), optional_mutable_ptr<T>(sum), device_ptr<M>(mean), device_ptr<M>(rstd), rows, cols);
    ACCEL_CUDA_CHECK_LAUNCH();
  });
}

void layer_norm_kernel(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, const Tensor& out,
                       const Tensor& mean, const Tensor& rstd) {
  normalize_rows("layer_norm", x, Tensor(), weight, bias, eps, out, Tensor(), mean, rstd);
}

void add_layer_norm_kernel(const Tensor& x, const Tensor& residual, const Tensor& weight, const Tensor& bias,
                           double eps, const Tensor& out, const Tensor& sum, const Tensor& mean, const Tensor& rstd) {
  normalize_rows("add_layer_norm", x, residual, weight, bias, eps, out, sum, mean, rstd);
}

void layer_norm_backward_kernel(const Tensor& grad, const Tensor& x, const Tensor& weight, const Tensor& mean,
                                const Tensor& rstd, const Tensor& grad_x, const Tensor& grad_weight,
                                const Tensor& grad_bias) {
  const int64_t rows = x.size(0), cols = x.size(1);
  check_stats_dtype(mean, x.dtype());
  visit_floating_device(x.dtype(), "layer_norm_backward", [&]<typename T>() {
    using M = stat_t<T>;
    KernelContext context(x);
    if (grad_x.defined() && rows > 0) {
      layer_norm_grad_x_kernel<T><<<row_blocks(rows), threads_per_row(cols), 0, context.stream>>>(
          device_ptr<const T>(grad), device_ptr<const T>(x), optional_ptr<T>(weight), device_ptr<const M>(mean),
          device_ptr<const M>(rstd), device_ptr<T>(grad_x), rows, cols);
      ACCEL_CUDA_CHECK_LAUNCH();
    }
    if ((grad_weight.defined() || grad_bias.defined()) && cols > 0) {
      layer_norm_grad_params_kernel<T><<<grid_for(cols), kBlockSize, 0, context.stream>>>(
          device_ptr<const T>(grad), device_ptr<const T>(x), device_ptr<const M>(mean), device_ptr<const M>(rstd),
          optional_mutable_ptr<T>(grad_weight), optional_mutable_ptr<T>(grad_bias), rows, cols);
      ACCEL_CUDA_CHECK_LAUNCH();
    }
  });
}

}  // namespace

ACCEL_REGISTER_KERNEL(softmax, DeviceType::CUDA, softmax_kernel);
ACCEL_REGISTER_KERNEL(softmax_backward, DeviceType::CUDA, softmax_backward_kernel);
ACCEL_REGISTER_KERNEL(layer_norm, DeviceType::CUDA, layer_norm_kernel);
ACCEL_REGISTER_KERNEL(layer_norm_backward, DeviceType::CUDA, layer_norm_backward_kernel);
ACCEL_REGISTER_KERNEL(add_layer_norm, DeviceType::CUDA, add_layer_norm_kernel);

}  // namespace accel::cuda
