/// @file
/// The Philox stream of core/random.h, sixteen blocks at a time with AVX2: each 32x32->64-bit
/// multiply of a round runs on eight counters in two _mm256_mul_epu32, and two independent
/// sets of eight are interleaved so that one set's multiplies run while the other's wait on
/// theirs (a round is a chain of dependent multiplies, so one set alone leaves the multiplier
/// idle most of the time). The words are transposed in registers into stream order, bit for
/// bit the scalar generator's (tests/core/test_tensor.cc checks it).
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
  auto scalar_blocks = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const PhiloxBlock w = philox_block(seed, first_block + static_cast<uint64_t>(i));
      for (int k = 0; k < 4; ++k) out[4 * i + k] = w[k];
    }
  };
  int64_t i = 0;
#if defined(__AVX2__)
  const __m256i mul0 = _mm256_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m256i mul1 = _mm256_set1_epi32(static_cast<int>(0xCD9E8D57u));
  const __m256i weyl0 = _mm256_set1_epi32(static_cast<int>(0x9E3779B9u));
  const __m256i weyl1 = _mm256_set1_epi32(static_cast<int>(0xBB67AE85u));
  const __m256i lane_index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  // lo and hi 32-bit halves of the eight products a * m, lane by lane.
  auto mul_hi_lo = [](__m256i a, __m256i m, __m256i& hi, __m256i& lo) {
    const __m256i even = _mm256_mul_epu32(a, m);                         // lanes 0, 2, 4, 6 as 64 bits
    const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);  // lanes 1, 3, 5, 7
    lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0b10101010);
    hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0b10101010);
  };
  // Eight blocks' counter state: c[w] holds word w of blocks base .. base + 7, lane by lane.
  struct Lanes {
    __m256i c[4];
  };
  auto round = [&](Lanes& s, __m256i k0, __m256i k1) {
    __m256i hi0, lo0, hi1, lo1;
    mul_hi_lo(s.c[0], mul0, hi0, lo0);
    mul_hi_lo(s.c[2], mul1, hi1, lo1);
    s.c[0] = _mm256_xor_si256(_mm256_xor_si256(hi1, s.c[1]), k0);
    s.c[1] = lo1;
    s.c[2] = _mm256_xor_si256(_mm256_xor_si256(hi0, s.c[3]), k1);
    s.c[3] = lo0;
  };
  // Writes the eight blocks' 32 words in stream order (block by block, w0..w3 each).
  auto store = [](const Lanes& s, uint32_t* dst) {
    const __m256i t0 = _mm256_unpacklo_epi32(s.c[0], s.c[1]);  // b0w0 b0w1 b1w0 b1w1 | b4.. b5..
    const __m256i t1 = _mm256_unpackhi_epi32(s.c[0], s.c[1]);  // b2w0 b2w1 b3w0 b3w1 | b6.. b7..
    const __m256i t2 = _mm256_unpacklo_epi32(s.c[2], s.c[3]);  // b0w2 b0w3 b1w2 b1w3 | b4.. b5..
    const __m256i t3 = _mm256_unpackhi_epi32(s.c[2], s.c[3]);  // b2w2 b2w3 b3w2 b3w3 | b6.. b7..
    const __m256i b04 = _mm256_unpacklo_epi64(t0, t2), b15 = _mm256_unpackhi_epi64(t0, t2);
    const __m256i b26 = _mm256_unpacklo_epi64(t1, t3), b37 = _mm256_unpackhi_epi64(t1, t3);
    auto* v = reinterpret_cast<__m256i*>(dst);
    _mm256_storeu_si256(v + 0, _mm256_permute2x128_si256(b04, b15, 0x20));  // blocks 0, 1
    _mm256_storeu_si256(v + 1, _mm256_permute2x128_si256(b26, b37, 0x20));  // blocks 2, 3
    _mm256_storeu_si256(v + 2, _mm256_permute2x128_si256(b04, b15, 0x31));  // blocks 4, 5
    _mm256_storeu_si256(v + 3, _mm256_permute2x128_si256(b26, b37, 0x31));  // blocks 6, 7
  };
  // Counters (lo32, hi32) of blocks base .. base + 7 where their low words do not wrap.
  auto counters = [&](uint64_t base) {
    return Lanes{{_mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(base))), lane_index),
                  _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(base >> 32))), _mm256_setzero_si256(),
                  _mm256_setzero_si256()}};
  };
  for (; i + 16 <= blocks; i += 16) {
    const uint64_t base = first_block + static_cast<uint64_t>(i);
    if (static_cast<uint32_t>(base) > 0xFFFFFFFFu - 15) {  // a low word wraps: the scalar path carries
      scalar_blocks(i, i + 16);
      continue;
    }
    Lanes a = counters(base), b = counters(base + 8);
    __m256i k0 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(seed)));
    __m256i k1 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(seed >> 32)));
    for (int r = 0; r < 10; ++r) {
      round(a, k0, k1);
      round(b, k0, k1);
      k0 = _mm256_add_epi32(k0, weyl0);
      k1 = _mm256_add_epi32(k1, weyl1);
    }
    store(a, out + 4 * i);
    store(b, out + 4 * (i + 8));
  }
#endif
  scalar_blocks(i, blocks);
}

}  // namespace accel::cpu
