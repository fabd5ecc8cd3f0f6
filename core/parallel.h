/// @file
/// Threading: OpenMP, the same runtime oneDNN uses here, so the two never oversubscribe.
/// OMP_NUM_THREADS sets the count; set_num_threads changes it at run time.
#pragma once

#include <cstdint>

#include <omp.h>

namespace accel {

inline int get_num_threads() { return omp_get_max_threads(); }
inline void set_num_threads(int n) { omp_set_num_threads(n); }

/// Calls fn(begin, end) on disjoint chunks of [0, n) from several threads when there are at
/// least `grain` items per thread; runs inline otherwise (and when already inside a
/// parallel region).
template <typename F>
void parallel_for(int64_t n, int64_t grain, const F& fn) {
  if (n <= 0) return;
  int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  int64_t max_chunks = grain > 0 ? (n + grain - 1) / grain : n;
  if (threads <= 1 || max_chunks <= 1) {
    fn(int64_t{0}, n);
    return;
  }
  int64_t chunks = threads < max_chunks ? threads : max_chunks;
#pragma omp parallel for num_threads(static_cast<int>(chunks)) schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    int64_t begin = n * c / chunks;
    int64_t end = n * (c + 1) / chunks;
    fn(begin, end);
  }
}

}  // namespace accel
