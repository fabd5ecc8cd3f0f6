// CPU softmax and log_softmax over one dim, forward and backward. The tensor is viewed as
// (outer, D, inner) with the softmax dim in the middle; inner == 1 (the last dim, the
// attention case) is the contiguous fast path. Statistics are kept in float (double for
// float64).
#include <cmath>

#include "backends/cpu/vec_math.h"
#include "core/kernels.h"
#include "core/parallel.h"

namespace accel::cpu {

namespace {

struct Geometry {
  int64_t outer, D, inner;
};
Geometry geometry(const Tensor& t, int64_t dim) {
  Geometry g{1, t.size(dim), 1};
  for (int64_t d = 0; d < dim; ++d) g.outer *= t.size(d);
  for (int64_t d = dim + 1; d < t.dim(); ++d) g.inner *= t.size(d);
  return g;
}

void softmax_kernel(const Tensor& in, int64_t dim, bool log, const Tensor& out) {
  Geometry g = geometry(in, dim);
  visit_floating(in.dtype(), log ? "log_softmax" : "softmax", "cpu", [&]<typename T>() {
    using M = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const T* x = in.data_ptr<T>();
    T* y = out.data_ptr<T>();
    parallel_for(g.outer * g.inner, std::max<int64_t>(1, 16384 / std::max<int64_t>(g.D, 1)),
                 [&](int64_t begin, int64_t end) {
      std::vector<M> row(g.D), exps(g.D);
      for (int64_t r = begin; r < end; ++r) {
        int64_t o = r / g.inner, i = r % g.inner;
        const T* xr = x + o * g.D * g.inner + i;
        T* yr = y + o * g.D * g.inner + i;
        M max_value = -INFINITY;
        for (int64_t d = 0; d < g.D; ++d) {
          row[d] = M(xr[d * g.inner]);
          max_value = std::max(max_value, row[d]);
        }
        if (std::isinf(max_value) && max_value < 0) max_value = 0;  // all -inf: avoid NaN from inf-inf
        for (int64_t d = 0; d < g.D; ++d) row[d] -= max_value;
        std::vector<M>& shifted_exp = exps;
        if constexpr (std::is_same_v<M, float>) {
          vec::exp(row.data(), shifted_exp.data(), g.D);
        } else {
          for (int64_t d = 0; d < g.D; ++d) shifted_exp[d] = std::exp(row[d]);
        }
        M sum = 0;
        for (int64_t d = 0; d < g.D; ++d) sum += shifted_exp[d];
        if (log) {
          M log_sum = std::log(sum);
          for (int64_t d = 0; d < g.D; ++d) yr[d * g.inner] = T(row[d] - log_sum);
        } else {
          M inv = M(1) / sum;
          for (int64_t d = 0; d < g.D; ++d) yr[d * g.inner] = T(shifted_exp[d] * inv);
        }
      }
    });
  });
}

// softmax:     grad_in = y * (grad - sum(grad * y))
// log_softmax: grad_in = grad - exp(y) * sum(grad)
void softmax_backward_kernel(const Tensor& grad, const Tensor& out, int64_t dim, bool log, const Tensor& grad_in) {
  Geometry g = geometry(out, dim);
  visit_floating(out.dtype(), log ? "log_softmax_backward" : "softmax_backward", "cpu", [&]<typename T>() {
    using M = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const T* dy = grad.data_ptr<T>();
    const T* y = out.data_ptr<T>();
    T* dx = grad_in.data_ptr<T>();
    parallel_for(g.outer * g.inner, std::max<int64_t>(1, 16384 / std::max<int64_t>(g.D, 1)),
                 [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        int64_t base = (r / g.inner) * g.D * g.inner + r % g.inner;
        M dot = 0;
        for (int64_t d = 0; d < g.D; ++d) {
          int64_t k = base + d * g.inner;
          dot += log ? M(dy[k]) : M(dy[k]) * M(y[k]);
        }
        for (int64_t d = 0; d < g.D; ++d) {
          int64_t k = base + d * g.inner;
          dx[k] = log ? T(M(dy[k]) - std::exp(M(y[k])) * dot) : T(M(y[k]) * (M(dy[k]) - dot));
        }
      }
    });
  });
}

}  // namespace

ACCEL_REGISTER_KERNEL(softmax, DeviceType::CPU, softmax_kernel);
ACCEL_REGISTER_KERNEL(softmax_backward, DeviceType::CPU, softmax_backward_kernel);

}  // namespace accel::cpu
