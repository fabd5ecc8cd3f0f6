// tensor_compare.h: tensors_close(), a GoogleTest predicate that compares two tensors
// elementwise with |actual - expected| <= atol + rtol * |expected| (numpy.allclose's rule)
// and, on failure, says how many elements are off, where the worst one is, and the largest
// absolute and relative errors with their indices. What it is not: a dtype check (it
// converts both sides to float64 first, so a float32 result can be checked against a
// float64 reference); callers that care about dtype compare it themselves.
//
//   EXPECT_TRUE(tensors_close(y, expected, 1e-5, 1e-6)) << "case softmax, output";
//
// NaN matches NaN only; an infinity matches the same infinity only.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <iomanip>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace tensor_compare_detail {

// "[1, 0, 3]" for a row-major flat index into shape; "[]" for a 0-d tensor.
inline std::string index_string(int64_t flat, const accel::Shape& shape) {
  std::vector<int64_t> index(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    index[d] = shape[d] > 0 ? flat % shape[d] : 0;
    flat = shape[d] > 0 ? flat / shape[d] : 0;
  }
  std::ostringstream out;
  out << "[";
  for (size_t d = 0; d < index.size(); ++d) out << (d ? ", " : "") << index[d];
  out << "]";
  return out.str();
}

}  // namespace tensor_compare_detail

inline ::testing::AssertionResult tensors_close(const accel::Tensor& actual, const accel::Tensor& expected,
                                                double rtol, double atol) {
  using tensor_compare_detail::index_string;
  if (!actual.defined()) return ::testing::AssertionFailure() << "the actual tensor is undefined";
  if (!expected.defined()) return ::testing::AssertionFailure() << "the expected tensor is undefined";
  if (actual.sizes() != expected.sizes()) {
    return ::testing::AssertionFailure() << "shape mismatch: actual " << actual.shape_string() << " ("
                                         << actual.dtype() << ") vs expected " << expected.shape_string()
                                         << " (" << expected.dtype() << ")";
  }
  // Both sides in float64, contiguous, on the CPU: exact for every dtype accel has
  // (int64 indices in tests are far below 2^53).
  const accel::Tensor a = actual.detach().to(accel::kCPU, accel::kFloat64).contiguous();
  const accel::Tensor e = expected.detach().to(accel::kCPU, accel::kFloat64).contiguous();
  const double* pa = a.data_ptr<double>();
  const double* pe = e.data_ptr<double>();
  const int64_t n = a.numel();

  int64_t mismatches = 0;
  int64_t worst_at = -1;  // the element furthest outside its tolerance
  double worst_ratio = 0;
  int64_t max_abs_at = -1, max_rel_at = -1;
  double max_abs = 0, max_rel = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double x = pa[i], y = pe[i];
    bool ok;
    double ratio;  // |x - y| / (atol + rtol |y|); > 1 means out of tolerance
    if (std::isnan(x) || std::isnan(y)) {
      ok = std::isnan(x) && std::isnan(y);
      ratio = ok ? 0 : std::numeric_limits<double>::infinity();
    } else if (std::isinf(x) || std::isinf(y)) {
      ok = x == y;
      ratio = ok ? 0 : std::numeric_limits<double>::infinity();
    } else {
      const double diff = std::fabs(x - y);
      const double allowed = atol + rtol * std::fabs(y);
      ok = diff <= allowed;
      ratio = allowed > 0 ? diff / allowed : (diff > 0 ? std::numeric_limits<double>::infinity() : 0);
      const double rel = y != 0 ? diff / std::fabs(y) : (diff > 0 ? std::numeric_limits<double>::infinity() : 0);
      if (diff > max_abs) {
        max_abs = diff;
        max_abs_at = i;
      }
      if (rel > max_rel) {
        max_rel = rel;
        max_rel_at = i;
      }
    }
    if (!ok) {
      ++mismatches;
      if (worst_at < 0 || ratio > worst_ratio) {
        worst_ratio = ratio;
        worst_at = i;
      }
    }
  }
  if (mismatches == 0) return ::testing::AssertionSuccess();

  const accel::Shape& shape = a.sizes();
  auto failure = ::testing::AssertionFailure();
  failure << std::setprecision(9) << mismatches << " of " << n << " elements of shape " << a.shape_string()
          << " are outside |actual - expected| <= atol + rtol * |expected| (rtol " << rtol << ", atol " << atol
          << "); worst at " << index_string(worst_at, shape) << ": actual " << pa[worst_at] << ", expected "
          << pe[worst_at];
  if (max_abs_at >= 0) failure << "; max abs error " << max_abs << " at " << index_string(max_abs_at, shape);
  if (max_rel_at >= 0) failure << "; max rel error " << max_rel << " at " << index_string(max_rel_at, shape);
  return failure;
}
