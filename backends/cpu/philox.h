/// @file
/// The Philox stream of core/random.h, eight blocks at a time with AVX2: each 32x32->64-bit
/// multiply of a round runs on eight counters in two _mm256_mul_epu32, so drawing a dropout
/// mask costs a fraction of what the scalar philox_block loop does. Words come out in stream
/// order, bit for bit the scalar generator's (tests/core/test_tensor.cc checks it).
#pragma once

#include <cstdint>

#include "core/random.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace accel::cpu {

/// out[4 i + w] = word w of block (first_block + i) of the stream with this seed, for
/// i in [0, blocks).
inline void philox_words(uint64_t seed, uint64_t first_block, int64_t blocks, uint32_t* out) {
  int64_t i = 0;
#if defined(__AVX2__)
  const __m256i mul0 = _mm256_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m256i mul1 = _mm256_set1_epi32(static_cast<int>(0xCD9E8D57u));
  const __m256i weyl0 = _mm256_set1_epi32(static_cast<int>(0x9E3779B9u));
  const __m256i weyl1 = _mm256_set1_epi32(static_cast<int>(0xBB67AE85u));
  // lo and hi 32-bit halves of the eight products a * m, lane by lane.
  auto mul_hi_lo = [](__m256i a, __m256i m, __m256i& hi, __m256i& lo) {
    const __m256i even = _mm256_mul_epu32(a, m);                         // lanes 0, 2, 4, 6 as 64 bits
    const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);  // lanes 1, 3, 5, 7
    lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0b10101010);
    hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0b10101010);
  };
  alignas(32) uint32_t lanes[4][8];
  for (; i + 8 <= blocks; i += 8) {
    alignas(32) uint32_t low[8], high[8];
    for (int l = 0; l < 8; ++l) {
      const uint64_t block = first_block + static_cast<uint64_t>(i + l);
      low[l] = static_cast<uint32_t>(block);
      high[l] = static_cast<uint32_t>(block >> 32);
    }
    __m256i c0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(low));
    __m256i c1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(high));
    __m256i c2 = _mm256_setzero_si256(), c3 = _mm256_setzero_si256();
    __m256i k0 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(seed)));
    __m256i k1 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(seed >> 32)));
    for (int round = 0; round < 10; ++round) {
      __m256i hi0, lo0, hi1, lo1;
      mul_hi_lo(c0, mul0, hi0, lo0);
      mul_hi_lo(c2, mul1, hi1, lo1);
      c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), k0);
      c1 = lo1;
      c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), k1);
      c3 = lo0;
      k0 = _mm256_add_epi32(k0, weyl0);
      k1 = _mm256_add_epi32(k1, weyl1);
    }
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes[0]), c0);
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes[1]), c1);
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes[2]), c2);
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes[3]), c3);
    for (int l = 0; l < 8; ++l) {
      for (int w = 0; w < 4; ++w) out[4 * (i + l) + w] = lanes[w][l];
    }
  }
#endif
  for (; i < blocks; ++i) {
    const PhiloxBlock w = philox_block(seed, first_block + static_cast<uint64_t>(i));
    for (int k = 0; k < 4; ++k) out[4 * i + k] = w[k];
  }
}

}  // namespace accel::cpu
