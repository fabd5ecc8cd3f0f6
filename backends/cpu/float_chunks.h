// Chunks of floats for the vectorized CPU kernels of float32, bfloat16 and float16: for float32
// a chunk is the tensor's own memory; a 16-bit tensor's elements are converted into a buffer on
// load and rounded once on store, as every 16-bit kernel computes in float and rounds once.
// Contiguous tensors only.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>

#include "core/tensor.h"

namespace accel::cpu {

inline constexpr int64_t kFloatChunk = 512;  // elements per chunk: three buffers fit in L1

inline bool is_chunkable_float(DType dtype) { return dtype == kFloat32 || dtype == kBFloat16 || dtype == kFloat16; }

template <typename T>
const float* load_chunk_as(const Tensor& t, int64_t start, int64_t n, float* buffer) {
  const T* from = t.data_ptr<T>() + start;
  for (int64_t i = 0; i < n; ++i) buffer[i] = float(from[i]);
  return buffer;
}

/// Elements [start, start + n) of `t` as floats: `t`'s own memory for float32, else `buffer`.
inline const float* load_chunk(const Tensor& t, int64_t start, int64_t n, float* buffer) {
  switch (t.dtype()) {
    case kBFloat16: return load_chunk_as<BFloat16>(t, start, n, buffer);
    case kFloat16: return load_chunk_as<Half>(t, start, n, buffer);
    default: return t.data_ptr<float>() + start;
  }
}

/// Where to compute a chunk of `t`'s elements from `start`: its own memory for float32, else
/// `buffer`, which store_chunk then rounds into `t`.
inline float* chunk_target(const Tensor& t, int64_t start, float* buffer) {
  return t.dtype() == kFloat32 ? t.data_ptr<float>() + start : buffer;
}

/// Rounds n computed floats into `t` from `start` (nothing to do for float32, computed in place).
inline void store_chunk(const Tensor& t, int64_t start, int64_t n, const float* values) {
  if (t.dtype() == kBFloat16) {
    BFloat16* to = t.data_ptr<BFloat16>() + start;
    for (int64_t i = 0; i < n; ++i) to[i] = BFloat16(values[i]);
  } else if (t.dtype() == kFloat16) {
    Half* to = t.data_ptr<Half>() + start;
    for (int64_t i = 0; i < n; ++i) to[i] = Half(values[i]);
  }
}

/// Runs fn(start, n, in, out) over [begin, end) of contiguous float tensors in chunks of at most
/// kFloatChunk elements: in[i] holds elements [start, start + n) of inputs[i] as floats, and
/// out[o] is where fn writes those of outputs[o] (rounded into 16-bit outputs afterwards).
template <size_t kIn, size_t kOut, typename F>
void for_each_float_chunk(int64_t begin, int64_t end, const std::array<const Tensor*, kIn>& inputs,
                          const std::array<const Tensor*, kOut>& outputs, const F& fn) {
  float in_buffers[kIn][kFloatChunk], out_buffers[kOut][kFloatChunk];
  std::array<const float*, kIn> in;
  std::array<float*, kOut> out;
  for (int64_t start = begin; start < end; start += kFloatChunk) {
    const int64_t n = std::min(kFloatChunk, end - start);
    for (size_t i = 0; i < kIn; ++i) in[i] = load_chunk(*inputs[i], start, n, in_buffers[i]);
    for (size_t o = 0; o < kOut; ++o) out[o] = chunk_target(*outputs[o], start, out_buffers[o]);
    fn(start, n, in, out);
    for (size_t o = 0; o < kOut; ++o) store_chunk(*outputs[o], start, n, out[o]);
  }
}

}  // namespace accel::cpu
