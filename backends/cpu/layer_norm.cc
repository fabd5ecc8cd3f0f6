// CPU layer norm over the last `cols` elements of each row, forward (also of x + residual,
// the fused residual connection) and backward.
// Statistics in float (double for float64); mean and rstd are saved for backward. Row sums,
// forward and backward, are SIMD reductions (lane-wise partial sums, so not in index order);
// the weight and bias column sums of backward accumulate in double, one thread per column range.
//   y = (x - mean) * rstd * w + b,        rstd = 1 / sqrt(var + eps)   (biased var)
//   dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),  dxhat = dy * w
#include <cmath>
#include <vector>

#include "core/kernels.h"
#include "core/parallel.h"

namespace accel::cpu {

namespace {

// Normalizes each row of x, or of x + residual when residual is defined (the sum rounded to
// the dtype first, as add would, and written to `sum` when that is defined).
void normalize_rows(const char* op, const Tensor& x, const Tensor& residual, const Tensor& weight, const Tensor& bias,
                    double eps, const Tensor& out, const Tensor& sum, const Tensor& mean, const Tensor& rstd) {
  const int64_t cols = x.size(1), rows = x.size(0);
  visit_floating(x.dtype(), op, "cpu", [&]<typename T>() {
    using M = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const T* px = x.data_ptr<T>();
    const T* pres = residual.defined() ? residual.data_ptr<T>() : nullptr;
    T* psum = sum.defined() ? sum.data_ptr<T>() : nullptr;
    const T* pw = weight.defined() ? weight.data_ptr<T>() : nullptr;
    const T* pb = bias.defined() ? bias.data_ptr<T>() : nullptr;
    T* py = out.data_ptr<T>();
    M* pmean = mean.data_ptr<M>();
    M* prstd = rstd.data_ptr<M>();
    parallel_for(rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(cols, 1)), [&](int64_t begin, int64_t end) {
      std::vector<T> row_sum(pres != nullptr && psum == nullptr ? cols : 0);
      for (int64_t r = begin; r < end; ++r) {
        const T* xr = px + r * cols;
        if (pres != nullptr) {
          T* s = psum != nullptr ? psum + r * cols : row_sum.data();
          const T* rr = pres + r * cols;
          for (int64_t c = 0; c < cols; ++c) s[c] = T(M(xr[c]) + M(rr[c]));
          xr = s;
        }
        T* yr = py + r * cols;
        M total = 0;
#pragma omp simd reduction(+ : total)
        for (int64_t c = 0; c < cols; ++c) total += M(xr[c]);
        M mu = total / M(cols);
        M squares = 0;
#pragma omp simd reduction(+ : squares)
        for (int64_t c = 0; c < cols; ++c) {
          M d = M(xr[c]) - mu;
          squares += d * d;
        }
        M rs = M(1) / std::sqrt(squares / M(cols) + M(eps));
        pmean[r] = mu;
        prstd[r] = rs;
        for (int64_t c = 0; c < cols; ++c) {
          M v = (M(xr[c]) - mu) * rs;
          if (pw) v = v * M(pw[c]);
          if (pb) v = v + M(pb[c]);
          yr[c] = T(v);
        }
      }
    });
  });
}

void layer_norm_kernel(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps,
                       const Tensor& out, const Tensor& mean, const Tensor& rstd) {
  normalize_rows("layer_norm", x, Tensor(), weight, bias, eps, out, Tensor(), mean, rstd);
}

void add_layer_norm_kernel(const Tensor& x, const Tensor& residual, const Tensor& weight, const Tensor& bias,
                           double eps, const Tensor& out, const Tensor& sum, const Tensor& mean, const Tensor& rstd) {
  normalize_rows("add_layer_norm", x, residual, weight, bias, eps, out, sum, mean, rstd);
}

void layer_norm_backward_kernel(const Tensor& grad, const Tensor& x, const Tensor& weight,
                                const Tensor& mean, const Tensor& rstd, const Tensor& grad_x,
                                const Tensor& grad_weight, const Tensor& grad_bias) {
  const int64_t cols = x.size(1), rows = x.size(0);
  visit_floating(x.dtype(), "layer_norm_backward", "cpu", [&]<typename T>() {
    using M = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const T* pdy = grad.data_ptr<T>();
    const T* px = x.data_ptr<T>();
    const T* pw = weight.defined() ? weight.data_ptr<T>() : nullptr;
    const M* pmean = mean.data_ptr<M>();
    const M* prstd = rstd.data_ptr<M>();
    if (grad_x.defined()) {
      T* pdx = grad_x.data_ptr<T>();
      // One row; the weight's presence is a template parameter so that both loops stay
      // branch-free SIMD loops (their sums are lane-wise partial sums, as the forward's).
      auto row = [&]<bool kWeighted>(int64_t r) {
        const T* xr = px + r * cols;
        const T* dyr = pdy + r * cols;
        const M mu = pmean[r], rs = prstd[r];
        M sum_dxhat = 0, sum_dxhat_xhat = 0;
#pragma omp simd reduction(+ : sum_dxhat, sum_dxhat_xhat)
        for (int64_t c = 0; c < cols; ++c) {
          const M dxhat = kWeighted ? M(dyr[c]) * M(pw[c]) : M(dyr[c]);
          const M xhat = (M(xr[c]) - mu) * rs;
          sum_dxhat += dxhat;
          sum_dxhat_xhat += dxhat * xhat;
        }
        const M mean_dxhat = sum_dxhat / M(cols), mean_dxhat_xhat = sum_dxhat_xhat / M(cols);
        T* dxr = pdx + r * cols;
#pragma omp simd
        for (int64_t c = 0; c < cols; ++c) {
          const M dxhat = kWeighted ? M(dyr[c]) * M(pw[c]) : M(dyr[c]);
          const M xhat = (M(xr[c]) - mu) * rs;
          dxr[c] = T(rs * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat));
        }
      };
      parallel_for(rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(cols, 1)), [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          if (pw != nullptr) row.template operator()<true>(r);
          else row.template operator()<false>(r);
        }
      });
    }
    if (grad_weight.defined() || grad_bias.defined()) {
      // Column sums over rows; each thread owns a range of columns.
      T* pdw = grad_weight.defined() ? grad_weight.data_ptr<T>() : nullptr;
      T* pdb = grad_bias.defined() ? grad_bias.data_ptr<T>() : nullptr;
      parallel_for(cols, 64, [&](int64_t c_begin, int64_t c_end) {
        std::vector<double> dw(c_end - c_begin, 0.0), db(c_end - c_begin, 0.0);
        for (int64_t r = 0; r < rows; ++r) {
          M mu = pmean[r], rs = prstd[r];
          for (int64_t c = c_begin; c < c_end; ++c) {
            M dy = M(pdy[r * cols + c]);
            dw[c - c_begin] += double(dy * (M(px[r * cols + c]) - mu) * rs);
            db[c - c_begin] += double(dy);
          }
        }
        for (int64_t c = c_begin; c < c_end; ++c) {
          if (pdw) pdw[c] = T(static_cast<M>(dw[c - c_begin]));
          if (pdb) pdb[c] = T(static_cast<M>(db[c - c_begin]));
        }
      });
    }
  });
}

}  // namespace

ACCEL_REGISTER_KERNEL(layer_norm, DeviceType::CPU, layer_norm_kernel);
ACCEL_REGISTER_KERNEL(layer_norm_backward, DeviceType::CPU, layer_norm_backward_kernel);
ACCEL_REGISTER_KERNEL(add_layer_norm, DeviceType::CPU, add_layer_norm_kernel);

}  // namespace accel::cpu
