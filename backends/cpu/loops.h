/// @file
/// Strided loops for CPU kernels: visits every element of N operands that share one shape
/// (broadcast operands carry stride 0), in parallel chunks. Adjacent dims that are laid out
/// contiguously for every operand are merged first, so a contiguous tensor is one flat loop
/// and the innermost call sees unit strides where they exist.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "core/parallel.h"
#include "core/tensor.h"

namespace accel::cpu {

inline constexpr int64_t kGrainSize = 32768;  ///< elements per thread before splitting pays

template <int N>
struct StridedLayout {
  Shape sizes;                                ///< coalesced, outermost first
  std::vector<std::array<int64_t, N>> strides;  ///< in bytes, per dim per operand
};

/// Merges dims that are contiguous for every operand; drops size-1 dims.
template <int N>
StridedLayout<N> coalesce(const Shape& sizes, const std::array<const Tensor*, N>& operands) {
  StridedLayout<N> layout;
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] == 1) continue;
    std::array<int64_t, N> s;
    for (int k = 0; k < N; ++k) s[k] = operands[k]->strides()[d] * operands[k]->element_size();
    if (!layout.sizes.empty()) {
      bool mergeable = true;
      auto& prev = layout.strides.back();
      for (int k = 0; k < N; ++k) {
        if (prev[k] != s[k] * sizes[d]) mergeable = false;
      }
      if (mergeable) {
        layout.sizes.back() *= sizes[d];
        prev = s;
        continue;
      }
    }
    layout.sizes.push_back(sizes[d]);
    layout.strides.push_back(s);
  }
  if (layout.sizes.empty()) {
    layout.sizes.push_back(1);
    layout.strides.push_back({});
  }
  return layout;
}

/// inner(ptrs, strides_bytes, n): processes n elements of the innermost dim starting at ptrs.
template <int N, typename Inner>
void for_each_strided(const Shape& sizes, const std::array<const Tensor*, N>& operands, const Inner& inner) {
  // No elements: nothing to visit, and an empty tensor's data pointer may be null, which the
  // row offsets below must not be added to (UBSan: offset applied to a null pointer).
  for (int64_t size : sizes) {
    if (size == 0) return;
  }
  StridedLayout<N> layout = coalesce<N>(sizes, operands);
  const int ndim = static_cast<int>(layout.sizes.size());
  const int64_t inner_size = layout.sizes.back();
  const std::array<int64_t, N> inner_strides = layout.strides.back();
  int64_t outer_count = 1;
  for (int d = 0; d < ndim - 1; ++d) outer_count *= layout.sizes[d];
  std::array<char*, N> base;
  for (int k = 0; k < N; ++k) base[k] = static_cast<char*>(operands[k]->data_ptr());

  int64_t grain_rows = std::max<int64_t>(1, kGrainSize / std::max<int64_t>(inner_size, 1));
  auto run_rows = [&](int64_t row_begin, int64_t row_end) {
    // Counter over the outer dims, started at row_begin and then incremented.
    std::vector<int64_t> index(std::max(ndim - 1, 0));
    int64_t rem = row_begin;
    for (int d = ndim - 2; d >= 0; --d) {
      index[d] = rem % layout.sizes[d];
      rem /= layout.sizes[d];
    }
    for (int64_t row = row_begin; row < row_end; ++row) {
      std::array<char*, N> ptrs = base;
      for (int d = 0; d < ndim - 1; ++d) {
        for (int k = 0; k < N; ++k) ptrs[k] += index[d] * layout.strides[d][k];
      }
      inner(ptrs, inner_strides, inner_size);
      for (int d = ndim - 2; d >= 0; --d) {
        if (++index[d] < layout.sizes[d]) break;
        index[d] = 0;
      }
    }
  };
  if (outer_count == 1 && inner_size >= 2 * kGrainSize) {
    // One long row: split it instead.
    parallel_for(inner_size, kGrainSize, [&](int64_t begin, int64_t end) {
      std::array<char*, N> ptrs = base;
      for (int k = 0; k < N; ++k) ptrs[k] += begin * inner_strides[k];
      inner(ptrs, inner_strides, end - begin);
    });
    return;
  }
  parallel_for(outer_count, grain_rows, run_rows);
}

/// Elementwise map over typed operands: out = f(in...), with a unit-stride fast path the
/// compiler vectorizes.
template <typename Out, typename... In, typename F>
void map_elementwise(const Tensor& out, const F& f, const std::array<const Tensor*, sizeof...(In)>& inputs) {
  constexpr int N = 1 + sizeof...(In);
  std::array<const Tensor*, N> operands;
  operands[0] = &out;
  for (size_t i = 0; i < sizeof...(In); ++i) operands[i + 1] = inputs[i];
  for_each_strided<N>(out.sizes(), operands, [&](const std::array<char*, N>& ptrs,
                                                   const std::array<int64_t, N>& strides, int64_t n) {
    bool unit = strides[0] == sizeof(Out), unit_or_broadcast = unit;
    size_t k = 1;
    ((unit = unit && strides[k] == static_cast<int64_t>(sizeof(In)),
      unit_or_broadcast = unit_or_broadcast && (strides[k] == static_cast<int64_t>(sizeof(In)) || strides[k] == 0),
      ++k), ...);
    if (unit) {
      Out* o = reinterpret_cast<Out*>(ptrs[0]);
      [&]<size_t... I>(std::index_sequence<I...>) {
        std::tuple<In*...> in{reinterpret_cast<In*>(ptrs[I + 1])...};
        for (int64_t i = 0; i < n; ++i) o[i] = f(std::get<I>(in)[i]...);
      }(std::index_sequence_for<In...>{});
    } else if (unit_or_broadcast) {
      // Some inputs repeat one value along the row (x * 0.5, x + bias[j]): copy that value
      // into a small buffer so the loop stays unit-stride for every operand and vectorizes.
      constexpr int64_t kChunk = 256;
      Out* o = reinterpret_cast<Out*>(ptrs[0]);
      [&]<size_t... I>(std::index_sequence<I...>) {
        std::tuple<std::array<In, kChunk>...> repeated;
        [[maybe_unused]] const int64_t used = n < kChunk ? n : kChunk;  // unused with no inputs (fill)
        ((strides[I + 1] == 0
              ? void(std::fill_n(std::get<I>(repeated).data(), used, *reinterpret_cast<const In*>(ptrs[I + 1])))
              : void()),
         ...);
        for (int64_t start = 0; start < n; start += kChunk) {
          const int64_t len = n - start < kChunk ? n - start : kChunk;
          std::tuple<const In*...> in{(strides[I + 1] == 0 ? std::get<I>(repeated).data()
                                                           : reinterpret_cast<const In*>(ptrs[I + 1]) + start)...};
          Out* out = o + start;
          for (int64_t i = 0; i < len; ++i) out[i] = f(std::get<I>(in)[i]...);
        }
      }(std::index_sequence_for<In...>{});
    } else {
      [&]<size_t... I>(std::index_sequence<I...>) {
        for (int64_t i = 0; i < n; ++i) {
          *reinterpret_cast<Out*>(ptrs[0] + i * strides[0]) =
              f(*reinterpret_cast<const In*>(ptrs[I + 1] + i * strides[I + 1])...);
        }
      }(std::index_sequence_for<In...>{});
    }
  });
}

}  // namespace accel::cpu
