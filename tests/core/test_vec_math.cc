// The CPU kernels' vector math (backends/cpu/vec_math.h) against float64: exp over arrays and
// softmax's exp-and-sum sweep, at lengths that take the vector body, the scalar tail and both.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backends/cpu/vec_math.h"

namespace accel::cpu {
namespace {

// Within 4 ulp of float64's exp rounded to float (and exactly 0 where that underflows; the
// subnormal range gets an absolute float-min allowance).
double exp_tolerance(double expected) {
  return 4 * expected * std::numeric_limits<float>::epsilon() + std::numeric_limits<float>::min();
}

std::vector<float> inputs(int64_t n) {
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) x[i] = -12.0f + 0.37f * static_cast<float>(i % 41) - 0.011f * static_cast<float>(i);
  if (n > 3) x[3] = -std::numeric_limits<float>::infinity();  // a masked score
  if (n > 7) x[7] = -200.0f;                                  // underflows to 0
  return x;
}

TEST(VecMath, ExpMatchesFloat64WithinFourUlp) {
  for (int64_t n : {0, 1, 5, 8, 16, 37, 128}) {
    std::vector<float> x = inputs(n), y(x.size());
    vec::exp(x.data(), y.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double expected = static_cast<float>(std::exp(double(x[i])));
      EXPECT_NEAR(y[i], expected, exp_tolerance(expected)) << "n " << n << " i " << i;
    }
  }
}

TEST(VecMath, ExpShiftedSumWritesTheExponentsAndReturnsTheirSum) {
  for (int64_t n : {0, 1, 5, 8, 16, 37, 128}) {
    std::vector<float> x = inputs(n);
    const std::vector<float> original = x;
    float shift = 0;  // the max, as softmax subtracts it
    for (float v : original) shift = std::max(shift, v);
    const float sum = vec::exp_shifted_sum(x.data(), shift, n);
    double expected_sum = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double expected = static_cast<float>(std::exp(double(original[i] - shift)));
      EXPECT_NEAR(x[i], expected, exp_tolerance(expected)) << "n " << n << " i " << i;
      expected_sum += expected;
    }
    EXPECT_NEAR(sum, expected_sum, 1e-6 * expected_sum) << "n " << n;
  }
}

}  // namespace
}  // namespace accel::cpu
