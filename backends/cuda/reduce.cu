// CUDA reductions over any set of dims: sum, mean, max/min (with indices), argmax/argmin,
// var. One block reduces one output element (a grid-stride loop over outputs), its threads
// striding over the reduced sub-space, combined with warp shuffles. Floating sums accumulate
// in double and integer sums in int64, as on the CPU; max/min follow the CPU's rules exactly
// (the first NaN wins, else the first occurrence of the best value), so indices agree. Also the
// fused multiply and column sum of linear_gelu's backward, and the sum of squares over many
// tensors (gradient norms).
#include <algorithm>
#include <cmath>

#include "backends/cuda/device_utils.cuh"
#include "core/kernels.h"

namespace accel::cuda {

namespace {

template <typename T>
using acc_t = std::conditional_t<is_device_floating_v<T>, double, int64_t>;

struct ReduceGeometry {
  OffsetCalculator<1> kept;     // output element -> offset of its first input element
  OffsetCalculator<1> reduced;  // flat index in the reduced sub-space -> offset
  int64_t out_numel, count;
};

template <typename C>
struct Candidate {
  C value;
  int64_t index;  // -1: none yet
};

template <typename C>
__device__ __forceinline__ bool is_nan(C v) { return v != v; }
// [snippet:nan-and-ties]
// The better of two candidates under the CPU's rules.
template <typename C>
__device__ __forceinline__ Candidate<C> better(Candidate<C> a, Candidate<C> b, bool want_max) {
  if (a.index < 0) return b;
  if (b.index < 0) return a;
  const bool a_nan = is_nan(a.value), b_nan = is_nan(b.value);
  if (a_nan || b_nan) {
    if (a_nan && b_nan) return a.index < b.index ? a : b;
    return a_nan ? a : b;
  }
  if (a.value == b.value) return a.index < b.index ? a : b;
  return (want_max ? a.value > b.value : a.value < b.value) ? a : b;
}
// [end]
template <typename T>
__global__ void reduce_kernel_device(ReduceOp op, const T* in, ReduceGeometry g, T* out, int64_t* out_index,
                                     int64_t* indices, int64_t correction) {
  using C = compute_t<T>;
  using Acc = acc_t<T>;
  __shared__ Acc shared_acc[32];
  __shared__ C shared_value[32];
  __shared__ int64_t shared_index[32];
  for (int64_t o = blockIdx.x; o < g.out_numel; o += gridDim.x) {
    int64_t base[1];
    g.kept.offsets(o, base);
    auto element = [&](int64_t flat) {
      int64_t off[1];
      g.reduced.offsets(flat, off);
      return load_compute(in[base[0] + off[0]]);
    };
    if (op == ReduceOp::Sum || op == ReduceOp::Mean || op == ReduceOp::Var) {
      Acc sum = 0;
      for (int64_t i = threadIdx.x; i < g.count; i += blockDim.x) sum += Acc(element(i));
      sum = block_reduce(sum, SumOp{}, Acc(0), shared_acc);
      if constexpr (std::is_floating_point_v<Acc>) {
        if (op == ReduceOp::Var) {
          const double mean = sum / double(g.count);
          double squares = 0;
          for (int64_t i = threadIdx.x; i < g.count; i += blockDim.x) {
            const double d = double(element(i)) - mean;
            squares += d * d;
          }
          squares = block_reduce(squares, SumOp{}, 0.0, shared_acc);
          const double denom = double(g.count - correction);
          if (threadIdx.x == 0) out[o] = store_compute<T>(static_cast<C>(denom > 0 ? squares / denom : NAN));
          continue;
        }
        const double v = op == ReduceOp::Mean ? sum / double(g.count) : sum;
        if (threadIdx.x == 0) out[o] = store_compute<T>(static_cast<C>(v));
      } else {
        if (threadIdx.x == 0) out[o] = static_cast<T>(sum);  // integer mean is the sum, as on the CPU
      }
      continue;
    }
    const bool want_max = op == ReduceOp::Max || op == ReduceOp::ArgMax;
    Candidate<C> best{C(0), -1};
    for (int64_t i = threadIdx.x; i < g.count; i += blockDim.x) best = better(best, Candidate<C>{element(i), i}, want_max);
    // Warp, then block: shuffle both fields.
    for (int offset = 16; offset > 0; offset >>= 1) {
      Candidate<C> other{__shfl_down_sync(0xffffffffu, best.value, offset),
                         __shfl_down_sync(0xffffffffu, best.index, offset)};
      best = better(best, other, want_max);
    }
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    __syncthreads();
    if (lane == 0) {
      shared_value[warp] = best.value;
      shared_index[warp] = best.index;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int w = 1; w < int(blockDim.x / 32); ++w) best = better(best, Candidate<C>{shared_value[w], shared_index[w]}, want_max);
      if (op == ReduceOp::ArgMax || op == ReduceOp::ArgMin) {
        out_index[o] = best.index;
      } else {
        out[o] = store_compute<T>(best.value);
        if (indices != nullptr) indices[o] = best.index;
      }
    }
  }
}

void reduce_kernel(ReduceOp op, const Tensor& in, const Shape& dims, const Tensor& out, const Tensor& indices,
                   int64_t correction) {
  Shape kept_sizes, kept_strides, reduced_sizes, reduced_strides;
  for (int64_t d = 0, k = 0; d < in.dim(); ++d) {
    const bool reduced = k < static_cast<int64_t>(dims.size()) && dims[k] == d;
    if (reduced) ++k;
    (reduced ? reduced_sizes : kept_sizes).push_back(in.size(d));
    (reduced ? reduced_strides : kept_strides).push_back(in.stride(d));
  }
  ReduceGeometry g;
  std::array<const Shape*, 1> kept{&kept_strides};
  std::array<const Shape*, 1> red{&reduced_strides};
  g.kept = make_offset_calculator<1>(kept_sizes, kept);
  g.reduced = make_offset_calculator<1>(reduced_sizes, red);
  g.out_numel = shape_numel(kept_sizes);
  g.count = shape_numel(reduced_sizes);
  if (g.out_numel == 0) return;
  // Threads per output: enough for the reduced count, a multiple of the warp size.
  int threads = 32;
  while (threads < 256 && threads < g.count) threads *= 2;
  const bool arg = op == ReduceOp::ArgMax || op == ReduceOp::ArgMin;
  visit_numeric_device(in.dtype(), "reduce", [&]<typename T>() {
    KernelContext context(in);
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(g.out_numel, 1 << 20));
    reduce_kernel_device<T><<<blocks, threads, 0, context.stream>>>(
        op, device_ptr<const T>(in), g, arg ? nullptr : device_ptr<T>(out), arg ? device_ptr<int64_t>(out) : nullptr,
        indices.defined() ? device_ptr<int64_t>(indices) : nullptr, correction);
    ACCEL_CUDA_CHECK_LAUNCH();
  });
}

// out = a * b with out's column sums (kernels::MulColumnSumFn, linear_gelu's backward): a
// thread per column of a block of kRowBlock rows writes the products, coalesced along the row,
// and their sum in double into its block's partial; a second kernel adds each column's partials
// in block order. The same blocks as the CPU's, so the result does not depend on the launch.
constexpr int64_t kRowBlock = 64;

template <typename T>
__global__ void mul_column_partials(int64_t rows, int64_t cols, int64_t row_blocks, const T* a, const T* b, T* out,
                                    double* partial) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  for (int64_t block = blockIdx.y; block < row_blocks; block += gridDim.y) {
    const int64_t end = (block + 1) * kRowBlock < rows ? (block + 1) * kRowBlock : rows;
    double sum = 0;
    for (int64_t r = block * kRowBlock; r < end; ++r) {
      const T product = store_compute<T>(load_compute(a[r * cols + c]) * load_compute(b[r * cols + c]));
      out[r * cols + c] = product;
      sum += static_cast<double>(load_compute(product));
    }
    partial[block * cols + c] = sum;
  }
}

template <typename T>
__global__ void sum_column_partials(int64_t cols, int64_t row_blocks, const double* partial, T* column_sum) {
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < cols; c += int64_t(gridDim.x) * blockDim.x) {
    double total = 0;
    for (int64_t block = 0; block < row_blocks; ++block) total += partial[block * cols + c];
    column_sum[c] = store_compute<T>(total);
  }
}

void mul_column_sum_kernel(const Tensor& a, const Tensor& b, const Tensor& out, const Tensor& column_sum) {
  ACCEL_CHECK(a.dim() == 2 && a.is_contiguous() && b.is_contiguous() && out.is_contiguous() && a.sizes() == b.sizes() &&
                  column_sum.dim() == 1 && column_sum.size(0) == a.size(1),
              "mul_column_sum: expected contiguous (rows, cols) operands and a (cols) sum, got ", a.shape_string(), ", ",
              b.shape_string(), " and ", column_sum.shape_string());
  const int64_t rows = a.size(0), cols = a.size(1), row_blocks = (rows + kRowBlock - 1) / kRowBlock;
  if (cols == 0) return;
  visit_floating_device(a.dtype(), "mul_column_sum", [&]<typename T>() {
    KernelContext context(a);
    if (rows == 0) {
      sum_column_partials<T><<<grid_for(cols), kBlockSize, 0, context.stream>>>(cols, 0, nullptr,
                                                                               device_ptr<T>(column_sum));
      ACCEL_CUDA_CHECK_LAUNCH();
      return;
    }
    const Tensor partial = Tensor::empty({row_blocks, cols}, kFloat64, a.device());
    const dim3 grid(static_cast<unsigned>((cols + kBlockSize - 1) / kBlockSize),
                    static_cast<unsigned>(std::min<int64_t>(row_blocks, 65535)));
    mul_column_partials<T><<<grid, kBlockSize, 0, context.stream>>>(rows, cols, row_blocks, device_ptr<const T>(a),
                                                                    device_ptr<const T>(b), device_ptr<T>(out),
                                                                    device_ptr<double>(partial));
    ACCEL_CUDA_CHECK_LAUNCH();
    sum_column_partials<T><<<grid_for(cols), kBlockSize, 0, context.stream>>>(cols, row_blocks,
                                                                             device_ptr<const double>(partial),
                                                                             device_ptr<T>(column_sum));
    ACCEL_CUDA_CHECK_LAUNCH();
  });
}

// Sum of squares: one block per chunk of kSquaresChunk elements of one tensor writes the chunk's
// sum (in double) to its partial, one launch per tensor on the stream, no host synchronization;
// a last one-thread kernel adds the partials in order, so the result does not vary between runs.
constexpr int64_t kSquaresChunk = 65536;
constexpr int kSquaresThreads = 256;

template <typename T>
__global__ void chunk_sum_of_squares(const T* data, int64_t n, double* partial) {
  __shared__ double shared[32];
  const int64_t begin = int64_t(blockIdx.x) * kSquaresChunk;
  const int64_t end = begin + kSquaresChunk < n ? begin + kSquaresChunk : n;
  double acc = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const double x = static_cast<double>(load_compute(data[i]));
    acc += x * x;
  }
  acc = block_reduce(acc, SumOp{}, 0.0, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

__global__ void add_partials_in_order(const double* partial, int64_t count, double* out) {
  double sum = 0;
  for (int64_t i = 0; i < count; ++i) sum += partial[i];
  *out = sum;
}

void sum_of_squares_kernel(const std::vector<Tensor>& tensors, const Tensor& out) {
  KernelContext context(out);
  int64_t chunks = 0;
  for (const Tensor& t : tensors) chunks += (t.numel() + kSquaresChunk - 1) / kSquaresChunk;
  const Tensor partial = Tensor::empty({std::max<int64_t>(chunks, 1)}, kFloat64, out.device());
  double* next = device_ptr<double>(partial);
  if (!tensors.empty()) {
    visit_floating_device(tensors.front().dtype(), "sum_of_squares", [&]<typename T>() {
      for (const Tensor& t : tensors) {
        const int64_t n = t.numel(), blocks = (n + kSquaresChunk - 1) / kSquaresChunk;
        if (blocks == 0) continue;
        chunk_sum_of_squares<T><<<static_cast<unsigned>(blocks), kSquaresThreads, 0, context.stream>>>(
            device_ptr<const T>(t), n, next);
        ACCEL_CUDA_CHECK_LAUNCH();
        next += blocks;
      }
    });
  }
  add_partials_in_order<<<1, 1, 0, context.stream>>>(device_ptr<const double>(partial), chunks,
                                                      device_ptr<double>(out));
  ACCEL_CUDA_CHECK_LAUNCH();
}

}  // namespace

ACCEL_REGISTER_KERNEL(reduce, DeviceType::CUDA, reduce_kernel);
ACCEL_REGISTER_KERNEL(mul_column_sum, DeviceType::CUDA, mul_column_sum_kernel);
ACCEL_REGISTER_KERNEL(sum_of_squares, DeviceType::CUDA, sum_of_squares_kernel);

}  // namespace accel::cuda
