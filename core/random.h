/// @file
/// Random numbers: a Philox-4x32-10 counter-based generator (Salmon et al., SC'11; the one
/// cuRAND and PyTorch's CUDA backend use). Being counter-based, element i of any draw can be
/// computed independently, so the CPU and CUDA backends produce the same stream.
///
/// The stream, exactly:
/// @verbatim
/// key     = (k0, k1) = (low 32 bits of seed, high 32 bits of seed)
/// block j of a draw at generator offset `offset` is
///   philox4x32_10(counter = (c0, c1, c2, c3) = (lo32(offset + j), hi32(offset + j), 0, 0), key)
/// giving four 32-bit words w0..w3. Element i of the draw uses block i / 4, word i % 4.
/// uniform float in [0, 1):  (w >> 8) * 2^-24          (scaled to [a, b) as a + (b - a) * u)
/// uniform double in [0, 1): same 24-bit value (the stream is the same for every dtype)
/// normal (Box-Muller): elements 2m and 2m+1 (m = 0, 1, ... over the draw) use uniforms
///   u1 = 1 - uniform(word of element 2m) in (0, 1], u2 = uniform(word of element 2m+1):
///   z0 = sqrt(-2 ln u1) cos(2 pi u2), z1 = sqrt(-2 ln u1) sin(2 pi u2); then mean + std * z.
/// integers in [low, high): low + floor(u * (high - low)) with u the element's uniform, for
///   ranges up to 2^24 values (so every integer is equally likely up to the 24-bit grid).
/// @endverbatim
/// A draw of n elements advances the generator's offset by ceil(n / 4) blocks (rounded up
/// to an even count of elements for normals).
#pragma once

#include <array>
#include <cstdint>
#include <mutex>

namespace accel {

using PhiloxBlock = std::array<uint32_t, 4>;

/// Ten rounds of Philox-4x32 on counter c with key k.
inline PhiloxBlock philox4x32_10(PhiloxBlock c, std::array<uint32_t, 2> k) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = uint64_t(kMul0) * c[0];
    uint64_t p1 = uint64_t(kMul1) * c[2];
    c = {uint32_t(p1 >> 32) ^ c[1] ^ k[0], uint32_t(p1), uint32_t(p0 >> 32) ^ c[3] ^ k[1], uint32_t(p0)};
    k[0] += kWeyl0;
    k[1] += kWeyl1;
  }
  return c;
}

inline PhiloxBlock philox_block(uint64_t seed, uint64_t block_index) {
  return philox4x32_10({uint32_t(block_index), uint32_t(block_index >> 32), 0u, 0u},
                       {uint32_t(seed), uint32_t(seed >> 32)});
}

inline float philox_uniform(uint32_t word) { return float(word >> 8) * (1.0f / 16777216.0f); }

/// The dropout test philox_uniform(word) >= p in integers: (word >> 8) >= philox_threshold(p).
/// Both sides of the float test are exact (a 24-bit integer times 2^-24 against p), so
/// u >= p holds exactly when the 24-bit integer reaches ceil(p * 2^24); the integer form
/// vectorizes without conversions.
inline uint32_t philox_threshold(float p) {
  const float scaled = p * 16777216.0f;  // exact: a power-of-two scaling of p in [0, 1]
  const auto whole = static_cast<uint32_t>(scaled);
  return static_cast<float>(whole) == scaled ? whole : whole + 1;
}

/// A seed plus a position (offset, in Philox blocks) in the stream. Thread-safe.
class Generator {
 public:
  explicit Generator(uint64_t seed = 67280421310721ull) : seed_(seed) {}
  void manual_seed(uint64_t seed) {
    std::lock_guard<std::mutex> lock(mutex_);
    seed_ = seed;
    offset_ = 0;
  }
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset) {
    std::lock_guard<std::mutex> lock(mutex_);
    seed_ = seed;
    offset_ = offset;
  }
  /// Reserves the blocks for a draw of `elements` and returns the offset to draw them at.
  uint64_t reserve(uint64_t elements) {
    std::lock_guard<std::mutex> lock(mutex_);
    uint64_t start = offset_;
    offset_ += (elements + 3) / 4;
    return start;
  }

 private:
  std::mutex mutex_;
  uint64_t seed_;
  uint64_t offset_ = 0;
};

/// The process-wide default generator, seeded by manual_seed().
Generator& default_generator();

}  // namespace accel
