// CUDA indexing kernels: index_select / index_add along one dim (embedding forward and
// backward), gather / scatter_add (losses). One thread per element; the accumulating
// kernels use atomicAdd, so repeated indices (the same token twice in a batch) add up
// correctly, in an order that may differ from the CPU's (float sums agree to rounding).
// Tensors arrive as the CPU kernels receive them (contiguous; bounds checked by the op).
#include "backends/cuda/device_utils.cuh"
#include "core/kernels.h"

namespace accel::cuda {

namespace {

struct AroundDim {
  int64_t outer = 1, inner = 1;
};
AroundDim around(const Tensor& t, int64_t dim) {
  AroundDim g;
  for (int64_t d = 0; d < dim; ++d) g.outer *= t.size(d);
  for (int64_t d = dim + 1; d < t.dim(); ++d) g.inner *= t.size(d);
  return g;
}

template <typename T>
__device__ __forceinline__ void atomic_add(T* address, T value) {
  if constexpr (std::is_same_v<T, int64_t>) {
    atomicAdd(reinterpret_cast<unsigned long long*>(address), static_cast<unsigned long long>(value));
  } else {
    atomicAdd(address, value);  // float, double, int, __half (sm_70+), __nv_bfloat16 (sm_80+)
  }
}

template <typename T, typename I>
__global__ void index_select_device(const T* x, const I* index, T* out, int64_t total, int64_t D, int64_t L,
                                    int64_t inner) {
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = k % inner, l = (k / inner) % L, o = k / (inner * L);
    out[k] = x[(o * D + static_cast<int64_t>(index[l])) * inner + c];
  }
}

void index_select_kernel(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) {
  AroundDim g = around(x, dim);
  const int64_t D = x.size(dim), L = index.numel(), total = out.numel();
  if (total == 0) return;
  visit_all_device(x.dtype(), "index_select", [&]<typename T>() {
    visit_index(index.dtype(), "index_select", "cuda", [&]<typename I>() {
      KernelContext context(out);
      index_select_device<T, I><<<grid_for(total), kBlockSize, 0, context.stream>>>(
          device_ptr<const T>(x), device_ptr<const I>(index), device_ptr<T>(out), total, D, L, g.inner);
      ACCEL_CUDA_CHECK_LAUNCH();
    });
  });
}

template <typename T, typename I>
__global__ void index_add_device(T* out, const I* index, const T* source, int64_t total, int64_t D, int64_t L,
                                 int64_t inner) {
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = k % inner, l = (k / inner) % L, o = k / (inner * L);
    atomic_add(out + (o * D + static_cast<int64_t>(index[l])) * inner + c, source[k]);
  }
}

void index_add_kernel(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& source) {
  AroundDim g = around(out, dim);
  const int64_t D = out.size(dim), L = index.numel(), total = source.numel();
  if (total == 0) return;
  visit_numeric_device(out.dtype(), "index_add", [&]<typename T>() {
    visit_index(index.dtype(), "index_add", "cuda", [&]<typename I>() {
      KernelContext context(out);
      index_add_device<T, I><<<grid_for(total), kBlockSize, 0, context.stream>>>(
          device_ptr<T>(out), device_ptr<const I>(index), device_ptr<const T>(source), total, D, L, g.inner);
      ACCEL_CUDA_CHECK_LAUNCH();
    });
  });
}

// Index's shape and a target's strides: element k of (contiguous) index maps to the target
// element with the same coordinates, except `replacement` along `dim` (dim < 0: none).
struct Remap {
  int ndim;
  int64_t sizes[kMaxDims];
  int64_t strides[kMaxDims];
  __device__ int64_t offset(int64_t flat, int dim, int64_t replacement) const {
    int64_t result = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      const int64_t coord = flat % sizes[d];
      flat /= sizes[d];
      result += (d == dim ? replacement : coord) * strides[d];
    }
    return result;
  }
};
Remap make_remap(const Shape& sizes, const Shape& strides) {
  ACCEL_CHECK(static_cast<int>(sizes.size()) <= kMaxDims, "gather/scatter_add on cuda: at most ", kMaxDims,
              " dims, got ", shape_str(sizes));
  Remap r{static_cast<int>(sizes.size()), {}, {}};
  for (size_t d = 0; d < sizes.size(); ++d) {
    r.sizes[d] = sizes[d];
    r.strides[d] = strides[d];
  }
  return r;
}

template <typename T, typename I>
__global__ void gather_device(const T* x, const I* index, T* out, int64_t total, Remap into_x, int dim) {
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x) {
    out[k] = x[into_x.offset(k, dim, static_cast<int64_t>(index[k]))];
  }
}

void gather_kernel(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) {
  const int64_t total = index.numel();
  if (total == 0) return;
  Remap into_x = make_remap(index.sizes(), x.strides());
  visit_all_device(x.dtype(), "gather", [&]<typename T>() {
    visit_index(index.dtype(), "gather", "cuda", [&]<typename I>() {
      KernelContext context(out);
      gather_device<T, I><<<grid_for(total), kBlockSize, 0, context.stream>>>(
          device_ptr<const T>(x), device_ptr<const I>(index), device_ptr<T>(out), total, into_x, int(dim));
      ACCEL_CUDA_CHECK_LAUNCH();
    });
  });
}

template <typename T, typename I>
__global__ void scatter_add_device(T* out, const I* index, const T* source, int64_t total, Remap into_out,
                                   Remap from_source, int dim) {
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x) {
    atomic_add(out + into_out.offset(k, dim, static_cast<int64_t>(index[k])), source[from_source.offset(k, -1, 0)]);
  }
}

void scatter_add_kernel(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& source) {
  const int64_t total = index.numel();
  if (total == 0) return;
  Remap into_out = make_remap(index.sizes(), out.strides());
  Remap from_source = make_remap(index.sizes(), source.strides());
  visit_numeric_device(out.dtype(), "scatter_add", [&]<typename T>() {
    visit_index(index.dtype(), "scatter_add", "cuda", [&]<typename I>() {
      KernelContext context(out);
      scatter_add_device<T, I><<<grid_for(total), kBlockSize, 0, context.stream>>>(
          device_ptr<T>(out), device_ptr<const I>(index), device_ptr<const T>(source), total, into_out, from_source,
          int(dim));
      ACCEL_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace

ACCEL_REGISTER_KERNEL(index_select, DeviceType::CUDA, index_select_kernel);
ACCEL_REGISTER_KERNEL(index_add, DeviceType::CUDA, index_add_kernel);
ACCEL_REGISTER_KERNEL(gather, DeviceType::CUDA, gather_kernel);
ACCEL_REGISTER_KERNEL(scatter_add, DeviceType::CUDA, scatter_add_kernel);

}  // namespace accel::cuda
