/// @file
/// Vectorized float math for CPU kernels: exp, erf and tanh over arrays, 8 lanes at a time
/// through glibc's libmvec (the AVX2 variants GCC itself calls under -ffast-math; within 4
/// ulp), with a scalar std:: fallback for other targets and for the tail.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__AVX2__)
#include <immintrin.h>
extern "C" {
__m256 _ZGVdN8v_expf(__m256);
__m256 _ZGVdN8v_erff(__m256);
__m256 _ZGVdN8v_tanhf(__m256);
}
#endif

namespace accel::cpu::vec {

#if defined(__AVX2__)
#define ACCEL_VEC_MAP(name, vector_fn, scalar_fn)                               \
  inline void name(const float* in, float* out, int64_t n) {                    \
    int64_t i = 0;                                                              \
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, vector_fn(_mm256_loadu_ps(in + i))); \
    for (; i < n; ++i) out[i] = scalar_fn(in[i]);                               \
  }
#else
#define ACCEL_VEC_MAP(name, vector_fn, scalar_fn)                               \
  inline void name(const float* in, float* out, int64_t n) {                    \
    for (int64_t i = 0; i < n; ++i) out[i] = scalar_fn(in[i]);                  \
  }
#endif

ACCEL_VEC_MAP(exp, _ZGVdN8v_expf, std::exp)
ACCEL_VEC_MAP(erf, _ZGVdN8v_erff, std::erf)
ACCEL_VEC_MAP(tanh, _ZGVdN8v_tanhf, std::tanh)
#undef ACCEL_VEC_MAP

}  // namespace accel::cpu::vec
