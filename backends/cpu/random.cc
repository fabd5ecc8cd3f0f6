// CPU random fills and dropout from the Philox stream documented in core/random.h, drawn
// eight blocks at a time (backends/cpu/philox.h).
#include <algorithm>
#include <cmath>

#include "backends/cpu/float_chunks.h"
#include "backends/cpu/philox.h"
#include "core/kernels.h"
#include "core/parallel.h"
#include "core/random.h"

namespace accel::cpu {

namespace {

constexpr int64_t kBlocksPerBatch = 512;  // Philox blocks drawn at a time, vectorized

// Calls fn(j0, blocks, words) for consecutive batches of at most kBlocksPerBatch blocks that
// cover [block_begin, block_end): blocks j0 .. j0 + blocks - 1, their four words each in order.
template <typename F>
void for_each_batch(uint64_t seed, uint64_t offset, int64_t block_begin, int64_t block_end, const F& fn) {
  uint32_t words[4 * kBlocksPerBatch];
  for (int64_t j0 = block_begin; j0 < block_end; j0 += kBlocksPerBatch) {
    const int64_t blocks = std::min(kBlocksPerBatch, block_end - j0);
    philox_words(seed, offset + static_cast<uint64_t>(j0), blocks, words);
    fn(j0, blocks, static_cast<const uint32_t*>(words));
  }
}

// Calls fn(j, w) for every block j in [block_begin, block_end) with its four words w.
template <typename F>
void for_each_block(uint64_t seed, uint64_t offset, int64_t block_begin, int64_t block_end, const F& fn) {
  for_each_batch(seed, offset, block_begin, block_end, [&](int64_t j0, int64_t blocks, const uint32_t* words) {
    for (int64_t j = 0; j < blocks; ++j) fn(j0 + j, words + 4 * j);
  });
}

void random_kernel(const Tensor& dst, RandomKind kind, uint64_t seed, uint64_t offset, double a, double b) {
  visit_floating(dst.dtype(), "random", "cpu", [&]<typename T>() {
    T* out = dst.data_ptr<T>();
    const int64_t n = dst.numel();
    if (kind == RandomKind::Uniform) {
      parallel_for((n + 3) / 4, 4096, [&](int64_t block_begin, int64_t block_end) {
        for_each_block(seed, offset, block_begin, block_end, [&](int64_t j, const uint32_t* w) {
          for (int lane = 0; lane < 4 && 4 * j + lane < n; ++lane) {
            out[4 * j + lane] = T(static_cast<opmath_t<T>>(a + (b - a) * philox_uniform(w[lane])));
          }
        });
      });
      return;
    }
    // Normal: pairs (2m, 2m+1) share one Box-Muller transform; a block holds two pairs.
    constexpr double kTwoPi = 6.283185307179586476925;
    parallel_for((n + 3) / 4, 4096, [&](int64_t block_begin, int64_t block_end) {
      for_each_block(seed, offset, block_begin, block_end, [&](int64_t j, const uint32_t* w) {
        for (int pair = 0; pair < 2; ++pair) {
          double u1 = 1.0 - philox_uniform(w[2 * pair]);
          double u2 = philox_uniform(w[2 * pair + 1]);
          double radius = std::sqrt(-2.0 * std::log(u1));
          double z[2] = {radius * std::cos(kTwoPi * u2), radius * std::sin(kTwoPi * u2)};
          for (int k = 0; k < 2; ++k) {
            int64_t i = 4 * j + 2 * pair + k;
            if (i < n) out[i] = T(static_cast<opmath_t<T>>(a + b * z[k]));
          }
        }
      });
    });
  });
}

// Float32 and float64 run the select on their own memory; the 16-bit floats run it on float
// chunks (float_chunks.h), so that their loops vectorize as float32's do.
void dropout_kernel(const Tensor& x, double p, uint64_t seed, uint64_t offset, const Tensor& out, const Tensor& mask) {
  bool* keep = mask.data_ptr<bool>();
  const uint32_t threshold = philox_threshold(static_cast<float>(p));
  const int64_t n = x.numel();
  // Element i takes word i of the stream: a batch of blocks is one straight run of elements, a
  // loop without per-lane bounds checks that the compiler vectorizes. x is read
  // unconditionally, so the select vectorizes.
  auto select = [threshold]<typename M>(const uint32_t* w, const M* x_run, M scale, int64_t count, bool* keep_run,
                                        M* o_run) {
    for (int64_t e = 0; e < count; ++e) {
      const bool k = (w[e] >> 8) >= threshold;
      const M scaled = x_run[e] * scale;
      keep_run[e] = k;
      o_run[e] = k ? scaled : M(0);
    }
  };
  auto for_each_run = [&](const auto& run) {
    parallel_for((n + 3) / 4, 4096, [&](int64_t block_begin, int64_t block_end) {
      for_each_batch(seed, offset, block_begin, block_end, [&](int64_t j0, int64_t blocks, const uint32_t* w) {
        const int64_t first = 4 * j0;
        run(w, first, std::min(4 * blocks, n - first));
      });
    });
  };
  auto in_place = [&]<typename T>() {
    const T* in = x.data_ptr<T>();
    T* o = out.data_ptr<T>();
    const T scale = static_cast<T>(1.0 / (1.0 - p));
    for_each_run([&](const uint32_t* w, int64_t first, int64_t count) {
      select(w, in + first, scale, count, keep + first, o + first);
    });
  };
  if (x.dtype() == kFloat64) return in_place.template operator()<double>();
  if (x.dtype() == kFloat32) return in_place.template operator()<float>();
  ACCEL_CHECK(is_chunkable_float(x.dtype()), "dropout: no cpu kernel for dtype ", dtype_name(x.dtype()));
  const float scale = static_cast<float>(1.0 / (1.0 - p));
  for_each_run([&](const uint32_t* w, int64_t first, int64_t count) {
    for_each_float_chunk<1, 1>(first, first + count, {&x}, {&out},
                               [&](int64_t start, int64_t m, const auto& in, const auto& o) {
                                 select(w + (start - first), in[0], scale, m, keep + start, o[0]);
                               });
  });
}

void dropout_backward_kernel(const Tensor& grad, const Tensor& mask, double scale, const Tensor& grad_in) {
  // The mask's bytes as integers: a bool load carries a 0-or-1 guarantee that stops the
  // compiler from vectorizing the select. Every gradient is read and scaled, then selected: a
  // loop without a conditional load, which the compiler vectorizes.
  const auto* keep = reinterpret_cast<const uint8_t*>(mask.data_ptr<bool>());
  auto select = []<typename M>(const M* g, const uint8_t* keep_run, M s, int64_t count, M* o) {
    for (int64_t i = 0; i < count; ++i) {
      const M scaled = g[i] * s;
      o[i] = keep_run[i] != 0 ? scaled : M(0);
    }
  };
  auto in_place = [&]<typename T>() {
    const T* g = grad.data_ptr<T>();
    T* o = grad_in.data_ptr<T>();
    const T s = static_cast<T>(scale);
    parallel_for(grad.numel(), 32768, [&](int64_t begin, int64_t end) {
      select(g + begin, keep + begin, s, end - begin, o + begin);
    });
  };
  if (grad.dtype() == kFloat64) return in_place.template operator()<double>();
  if (grad.dtype() == kFloat32) return in_place.template operator()<float>();
  ACCEL_CHECK(is_chunkable_float(grad.dtype()), "dropout_backward: no cpu kernel for dtype ",
              dtype_name(grad.dtype()));
  const float s = static_cast<float>(scale);
  parallel_for(grad.numel(), 32768, [&](int64_t begin, int64_t end) {
    for_each_float_chunk<1, 1>(begin, end, {&grad}, {&grad_in},
                               [&](int64_t start, int64_t m, const auto& g, const auto& o) {
                                 select(g[0], keep + start, s, m, o[0]);
                               });
  });
}

}  // namespace

ACCEL_REGISTER_KERNEL(random, DeviceType::CPU, random_kernel);
ACCEL_REGISTER_KERNEL(dropout, DeviceType::CPU, dropout_kernel);
ACCEL_REGISTER_KERNEL(dropout_backward, DeviceType::CPU, dropout_backward_kernel);

}  // namespace accel::cpu
