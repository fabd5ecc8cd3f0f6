/// @file
/// Shared device-side pieces of the CUDA kernels: the host-to-device element type mapping
/// (Half -> __half, BFloat16 -> __nv_bfloat16, same bits), the compute type (16-bit floats
/// compute in float, as on the CPU), conversions that round like the CPU's, an N-d offset
/// calculator for strided operands, launch helpers, warp-shuffle block reductions, and the
/// device copy of core/random.h's Philox generator. Not a kernel file: no registrations.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <array>
#include <cstdint>
#include <type_traits>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/stream.h"
#include "core/tensor.h"

namespace accel::cuda {

// ---- element types ----------------------------------------------------------------------

template <typename T> struct DeviceTypeOf { using type = T; };
template <> struct DeviceTypeOf<Half> { using type = __half; };
template <> struct DeviceTypeOf<BFloat16> { using type = __nv_bfloat16; };
/// The device type with the bits of host type T.
template <typename T> using device_t = typename DeviceTypeOf<T>::type;

template <typename T> struct ComputeTypeOf { using type = T; };
template <> struct ComputeTypeOf<__half> { using type = float; };
template <> struct ComputeTypeOf<__nv_bfloat16> { using type = float; };
/// What a kernel computes in (the device mirror of core's opmath_t).
template <typename T> using compute_t = typename ComputeTypeOf<T>::type;

template <typename T> inline constexpr bool is_device_floating_v =
    std::is_floating_point_v<T> || std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;

/// T -> its compute type.
template <typename T>
__device__ __forceinline__ compute_t<T> load_compute(T v) {
  if constexpr (std::is_same_v<T, __half>) return __half2float(v);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __bfloat162float(v);
  else return v;
}

/// A compute value -> T, rounding to nearest even for 16-bit floats (as core's Half/BFloat16).
template <typename T, typename C>
__device__ __forceinline__ T store_compute(C v) {
  if constexpr (std::is_same_v<T, __half>) return __float2half_rn(static_cast<float>(v));
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16_rn(static_cast<float>(v));
  else return static_cast<T>(v);
}

/// Casts with the CPU's rules (backends/cpu/copy.cc): to bool is "!= 0"; from bool is 0/1;
/// otherwise through the compute types.
template <typename To, typename From>
__device__ __forceinline__ To convert(From v) {
  if constexpr (std::is_same_v<To, bool>) {
    return load_compute(v) != compute_t<From>(0);
  } else if constexpr (std::is_same_v<From, bool>) {
    return store_compute<To>(compute_t<To>(v ? 1 : 0));
  } else {
    return store_compute<To>(static_cast<compute_t<To>>(load_compute(v)));
  }
}

/// Calls f.template operator()<D>() with D the device type of `dtype` (floating dtypes).
template <typename F>
decltype(auto) visit_floating_device(DType dtype, const char* op, F&& f) {
  return visit_floating(dtype, op, "cuda", [&]<typename T>() { return f.template operator()<device_t<T>>(); });
}
template <typename F>
decltype(auto) visit_numeric_device(DType dtype, const char* op, F&& f) {
  return visit_numeric(dtype, op, "cuda", [&]<typename T>() { return f.template operator()<device_t<T>>(); });
}
template <typename F>
decltype(auto) visit_all_device(DType dtype, const char* op, F&& f) {
  return visit_all(dtype, op, "cuda", [&]<typename T>() { return f.template operator()<device_t<T>>(); });
}

template <typename T>
T* device_ptr(const Tensor& t) {
  return static_cast<T*>(t.data_ptr());
}

// ---- strided indexing -------------------------------------------------------------------

inline constexpr int kMaxDims = 12;

/// Element offsets of N operands that share one shape, for a flat row-major index. Built on
/// the host with dims merged where every operand is contiguous across them (size-1 dims
/// dropped), so most tensors need one or two divisions per element.
template <int N>
struct OffsetCalculator {
  int ndim = 0;
  int64_t sizes[kMaxDims];            // innermost first
  int64_t strides[kMaxDims][N];       // in elements

  __device__ __forceinline__ void offsets(int64_t linear, int64_t (&out)[N]) const {
#pragma unroll
    for (int k = 0; k < N; ++k) out[k] = 0;
    for (int d = 0; d < ndim; ++d) {
      const int64_t coord = linear % sizes[d];
      linear /= sizes[d];
#pragma unroll
      for (int k = 0; k < N; ++k) out[k] += coord * strides[d][k];
    }
  }
};

/// Builds the calculator for operands of shape `sizes` (each operand's strides in elements).
template <int N>
OffsetCalculator<N> make_offset_calculator(const Shape& sizes, const std::array<const Shape*, N>& operand_strides) {
  OffsetCalculator<N> calc;
  // Walk outermost to innermost, merging into the previous (outer) dim where contiguous.
  int64_t merged_sizes[kMaxDims];
  int64_t merged_strides[kMaxDims][N];
  int count = 0;
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] == 1) continue;
    bool mergeable = count > 0;
    for (int k = 0; k < N && mergeable; ++k) {
      mergeable = merged_strides[count - 1][k] == (*operand_strides[k])[d] * sizes[d];
    }
    if (mergeable) {
      merged_sizes[count - 1] *= sizes[d];
      for (int k = 0; k < N; ++k) merged_strides[count - 1][k] = (*operand_strides[k])[d];
      continue;
    }
    ACCEL_CHECK(count < kMaxDims, "cuda: tensors of more than ", kMaxDims, " non-mergeable dims are not supported, got ",
                shape_str(sizes));
    merged_sizes[count] = sizes[d];
    for (int k = 0; k < N; ++k) merged_strides[count][k] = (*operand_strides[k])[d];
    ++count;
  }
  calc.ndim = count;
  for (int d = 0; d < count; ++d) {  // reverse: the device loop goes innermost first
    calc.sizes[d] = merged_sizes[count - 1 - d];
    for (int k = 0; k < N; ++k) calc.strides[d][k] = merged_strides[count - 1 - d][k];
  }
  return calc;
}

// ---- launches ---------------------------------------------------------------------------

inline constexpr int kBlockSize = 256;

inline unsigned grid_for(int64_t work_items, int block = kBlockSize) {
  int64_t blocks = (work_items + block - 1) / block;
  // A grid-stride loop covers the rest; 2^20 blocks is plenty to fill any GPU.
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > (1 << 20) ? (1 << 20) : blocks));
}

/// Threads of a one-block-per-row kernel: the smallest power of two from 32 to 512 that
/// covers the row (a block strides over longer rows).
inline int threads_per_row(int64_t per_row) {
  int threads = 32;
  while (threads < 512 && threads < per_row) threads *= 2;
  return threads;
}

/// Blocks of a one-block-per-row kernel (a grid-stride loop covers rows past 2^20).
inline unsigned row_blocks(int64_t rows) {
  return static_cast<unsigned>(rows < 1 ? 1 : (rows > (1 << 20) ? (1 << 20) : rows));
}

/// The stream kernels for tensor t run on (its device's current stream); makes its device
/// current for the guard's lifetime.
struct KernelContext {
  DeviceGuard guard;
  cudaStream_t stream;
  explicit KernelContext(const Tensor& t) : guard(t.device().index), stream(current_stream(t.device().index)) {}
};

// ---- reductions -------------------------------------------------------------------------
// [snippet:block-reduce]
template <typename T, typename Op>
__device__ __forceinline__ T warp_reduce(T value, Op op) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) value = op(value, __shfl_down_sync(0xffffffffu, value, offset));
  return value;
}

/// Reduces one value per thread over the block (blockDim.x a multiple of 32, at most 1024);
/// every thread gets the result. `shared` holds 32 T. Must be reached by all threads.
template <typename T, typename Op>
__device__ __forceinline__ T block_reduce(T value, Op op, T identity, T* shared) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  value = warp_reduce(value, op);
  __syncthreads();  // shared may still be read from a previous call
  if (lane == 0) shared[warp] = value;
  __syncthreads();
  const int warps = blockDim.x / 32;
  value = threadIdx.x < warps ? shared[threadIdx.x] : identity;
  if (warp == 0) value = warp_reduce(value, op);
  if (threadIdx.x == 0) shared[0] = value;
  __syncthreads();
  return shared[0];
}
// [end]
struct SumOp {
  template <typename T>
  __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
struct MaxOp {
  template <typename T>
  __device__ __forceinline__ T operator()(T a, T b) const { return a > b ? a : b; }
};

// ---- Philox (the stream of core/random.h, bit for bit) ----------------------------------
// [snippet:philox]
__device__ __forceinline__ uint4 philox_block_device(uint64_t seed, uint64_t block_index) {
  uint32_t c0 = uint32_t(block_index), c1 = uint32_t(block_index >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
#pragma unroll
  for (int round = 0; round < 10; ++round) {
    const uint32_t hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
    const uint32_t hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
    const uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return make_uint4(c0, c1, c2, c3);
}
// [end]
__device__ __forceinline__ uint32_t philox_word(const uint4& w, int lane) {
  return lane == 0 ? w.x : lane == 1 ? w.y : lane == 2 ? w.z : w.w;
}

__device__ __forceinline__ float philox_uniform_device(uint32_t word) {
  return float(word >> 8) * (1.0f / 16777216.0f);
}

}  // namespace accel::cuda
