/// @file
/// The elementwise launcher of the CUDA backend: out = f(in...) over operands that share
/// out's shape (broadcast inputs carry stride 0). Contiguous operands take a grid-stride loop
/// with 128-bit loads and stores where every pointer is 16-byte aligned (a scalar tail and a
/// scalar path otherwise); anything else goes through the OffsetCalculator. f is a functor
/// with a __device__ operator() taking the inputs' device types and returning Out.
#pragma once

#include <cuda/std/tuple>
#include <cuda/std/utility>

#include <array>
#include <cstdint>
#include <utility>

#include "backends/cuda/device_utils.cuh"

namespace accel::cuda {

template <int V, typename T>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};
// [snippet:vectorized]
/// Elements per thread: as many as fit 16 bytes of the widest operand.
template <typename Out, typename... In>
__host__ __device__ constexpr int vector_width() {
  size_t widest = sizeof(Out);
  ((widest = sizeof(In) > widest ? sizeof(In) : widest), ...);
  return widest >= 16 ? 1 : static_cast<int>(16 / widest);
}

template <typename Out, typename F, typename Tuple, size_t... I>
__device__ __forceinline__ Out apply_packs(const F& f, const Tuple& packs, int lane, ::cuda::std::index_sequence<I...>) {
  return f(::cuda::std::get<I>(packs).v[lane]...);
}

template <typename Out, typename F, typename... In>
__global__ void elementwise_contiguous_kernel(int64_t n, bool vectorized, Out* out, F f, const In*... in) {
  constexpr int V = vector_width<Out, In...>();
  const int64_t step = int64_t(gridDim.x) * blockDim.x * V;
  for (int64_t base = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * V; base < n; base += step) {
    if (vectorized && base + V <= n) {
      ::cuda::std::tuple<Pack<V, In>...> packs{*reinterpret_cast<const Pack<V, In>*>(in + base)...};
      Pack<V, Out> result;
#pragma unroll
      for (int lane = 0; lane < V; ++lane) {
        result.v[lane] = apply_packs<Out>(f, packs, lane, ::cuda::std::index_sequence_for<In...>{});
      }
      *reinterpret_cast<Pack<V, Out>*>(out + base) = result;
    } else {
      for (int64_t i = base; i < base + V && i < n; ++i) out[i] = f(in[i]...);
    }
  }
}
// [end]
template <typename Out, typename F, typename Ptrs, size_t... I>
__device__ __forceinline__ void apply_strided(Out* out, const int64_t* offsets, const F& f, const Ptrs& in,
                                              ::cuda::std::index_sequence<I...>) {
  out[offsets[0]] = f(::cuda::std::get<I>(in)[offsets[I + 1]]...);
}

template <typename Out, typename F, typename... In>
__global__ void elementwise_strided_kernel(int64_t n, OffsetCalculator<1 + sizeof...(In)> calc, Out* out, F f,
                                           const In*... in) {
  constexpr int N = 1 + sizeof...(In);
  const ::cuda::std::tuple<const In*...> inputs{in...};
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    int64_t offsets[N];
    calc.offsets(i, offsets);
    apply_strided<Out>(out, offsets, f, inputs, ::cuda::std::index_sequence_for<In...>{});
  }
}

template <typename Out, typename... In, typename F, size_t... I>
void launch_elementwise_impl(const Tensor& out, const F& f, const std::array<const Tensor*, sizeof...(In)>& inputs,
                             std::index_sequence<I...>) {
  const int64_t n = out.numel();
  if (n == 0) return;
  KernelContext context(out);
  constexpr int N = 1 + sizeof...(In);
  bool contiguous = out.is_contiguous();
  bool aligned = reinterpret_cast<uintptr_t>(out.data_ptr()) % 16 == 0;
  for (const Tensor* t : inputs) {
    contiguous = contiguous && t->is_contiguous();
    aligned = aligned && reinterpret_cast<uintptr_t>(t->data_ptr()) % 16 == 0;
  }
  Out* out_ptr = device_ptr<Out>(out);
  if (contiguous) {
    constexpr int V = vector_width<Out, In...>();
    elementwise_contiguous_kernel<Out, F, In...><<<grid_for((n + V - 1) / V), kBlockSize, 0, context.stream>>>(
        n, aligned, out_ptr, f, device_ptr<const In>(*inputs[I])...);
  } else {
    std::array<const Shape*, N> strides{&out.strides(), &inputs[I]->strides()...};
    OffsetCalculator<N> calc = make_offset_calculator<N>(out.sizes(), strides);
    elementwise_strided_kernel<Out, F, In...><<<grid_for(n), kBlockSize, 0, context.stream>>>(
        n, calc, out_ptr, f, device_ptr<const In>(*inputs[I])...);
  }
  ACCEL_CUDA_CHECK_LAUNCH();
}

/// out = f(inputs...) elementwise; Out and In are device element types matching the tensors.
template <typename Out, typename... In, typename F>
void launch_elementwise(const Tensor& out, const F& f, const std::array<const Tensor*, sizeof...(In)>& inputs) {
  launch_elementwise_impl<Out, In...>(out, f, inputs, std::index_sequence_for<In...>{});
}

}  // namespace accel::cuda
