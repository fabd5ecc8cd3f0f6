/// @file
/// Vectorized float math for CPU kernels: exp, erf and tanh over arrays through glibc's
/// libmvec (the variants GCC itself calls under -ffast-math; within 4 ulp), 16 lanes at a time
/// where the build targets AVX-512 and 8 where it targets AVX2, with a scalar std:: fallback
/// for other targets and for the tail; and softmax's exp-and-sum pass.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
extern "C" {
__m512 _ZGVeN16v_expf(__m512);
__m512 _ZGVeN16v_erff(__m512);
__m512 _ZGVeN16v_tanhf(__m512);
}
#elif defined(__AVX2__)
extern "C" {
__m256 _ZGVdN8v_expf(__m256);
__m256 _ZGVdN8v_erff(__m256);
__m256 _ZGVdN8v_tanhf(__m256);
}
#endif

namespace accel::cpu::vec {

#if defined(__AVX512F__)
using Floats = __m512;
inline constexpr int64_t kLanes = 16;
inline Floats load(const float* p) { return _mm512_loadu_ps(p); }
inline void store(float* p, Floats v) { _mm512_storeu_ps(p, v); }
inline Floats splat(float x) { return _mm512_set1_ps(x); }
inline Floats add(Floats a, Floats b) { return _mm512_add_ps(a, b); }
inline Floats sub(Floats a, Floats b) { return _mm512_sub_ps(a, b); }
inline Floats exp(Floats v) { return _ZGVeN16v_expf(v); }
inline Floats erf(Floats v) { return _ZGVeN16v_erff(v); }
inline Floats tanh(Floats v) { return _ZGVeN16v_tanhf(v); }
#define ACCEL_VEC_LANES 1
#elif defined(__AVX2__)
using Floats = __m256;
inline constexpr int64_t kLanes = 8;
inline Floats load(const float* p) { return _mm256_loadu_ps(p); }
inline void store(float* p, Floats v) { _mm256_storeu_ps(p, v); }
inline Floats splat(float x) { return _mm256_set1_ps(x); }
inline Floats add(Floats a, Floats b) { return _mm256_add_ps(a, b); }
inline Floats sub(Floats a, Floats b) { return _mm256_sub_ps(a, b); }
inline Floats exp(Floats v) { return _ZGVdN8v_expf(v); }
inline Floats erf(Floats v) { return _ZGVdN8v_erff(v); }
inline Floats tanh(Floats v) { return _ZGVdN8v_tanhf(v); }
#define ACCEL_VEC_LANES 1
#endif

#if defined(ACCEL_VEC_LANES)
/// The sum of a vector's lanes, halves first: lanes i and i + kLanes / 2, then i + kLanes / 4, ...
/// (through memory: gcc 12 warns on the AVX-512 reduction and shuffle intrinsics).
inline float lane_sum(Floats v) {
  alignas(64) float lanes[kLanes];
  store(lanes, v);
  for (int64_t width = kLanes / 2; width > 0; width /= 2) {
    for (int64_t i = 0; i < width; ++i) lanes[i] += lanes[i + width];
  }
  return lanes[0];
}

#define ACCEL_VEC_MAP(name, scalar_fn)                                                      \
  inline void name(const float* in, float* out, int64_t n) {                               \
    int64_t i = 0;                                                                          \
    for (; i + kLanes <= n; i += kLanes) store(out + i, name(load(in + i)));               \
    for (; i < n; ++i) out[i] = scalar_fn(in[i]);                                           \
  }
#else
#define ACCEL_VEC_MAP(name, scalar_fn)                                                      \
  inline void name(const float* in, float* out, int64_t n) {                               \
    for (int64_t i = 0; i < n; ++i) out[i] = scalar_fn(in[i]);                              \
  }
#endif

ACCEL_VEC_MAP(exp, std::exp)
ACCEL_VEC_MAP(erf, std::erf)
ACCEL_VEC_MAP(tanh, std::tanh)
#undef ACCEL_VEC_MAP

/// In place x[i] = exp(x[i] - shift), returning the sum of the results: softmax's exponent
/// pass and its sum in one sweep. The sum adds one partial per vector lane, combines them,
/// then adds the tail in order, so it may differ in its last bits from a sequential sum.
inline float exp_shifted_sum(float* x, float shift, int64_t n) {
  int64_t i = 0;
  float sum = 0;
#if defined(ACCEL_VEC_LANES)
  const Floats shift_lanes = splat(shift);
  Floats partial = splat(0.0f);
  for (; i + kLanes <= n; i += kLanes) {
    const Floats e = exp(sub(load(x + i), shift_lanes));
    store(x + i, e);
    partial = add(partial, e);
  }
  sum = lane_sum(partial);
#endif
  for (; i < n; ++i) {
    x[i] = std::exp(x[i] - shift);
    sum += x[i];
  }
  return sum;
}

#undef ACCEL_VEC_LANES

}  // namespace accel::cpu::vec
