// Anomaly detection (core/autograd/anomaly.h): the first NaN or Inf in forward or backward
// stops with an error naming the op and whether it made the value or received it; off, the
// same computations run through.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/autograd/anomaly.h"
#include "core/ops.h"
#include "tests/test_util.h"

using namespace accel;
using ::testing::HasSubstr;

namespace {

std::string error_of(const std::function<void()>& f) { return accel::testing::error_of(f); }

TEST(Anomaly, ForwardNamesTheOpThatMadeTheNaN) {
  autograd::DetectAnomalyGuard anomaly;
  Tensor x = from_vector<float>({1.0f, -2.0f, 3.0f}).requires_grad_();
  std::string message = error_of([&] { Tensor y = (x * 2.0).log(); });
  EXPECT_THAT(message, HasSubstr("the forward of Log (recorded as LogBackward) produced NaN or Inf"));
  EXPECT_THAT(message, HasSubstr("its inputs were finite, so this op made it"));
}

TEST(Anomaly, ForwardSaysWhenTheNaNCameFromUpstream) {
  autograd::DetectAnomalyGuard anomaly;
  Tensor data = from_vector<float>({1.0f, std::numeric_limits<float>::quiet_NaN()});
  Tensor w = from_vector<float>({0.5f, 0.5f}).requires_grad_();
  std::string message = error_of([&] { Tensor y = data * w; });
  EXPECT_THAT(message, HasSubstr("an input was already NaN or Inf, so it came from upstream"));
}

TEST(Anomaly, BackwardNamesTheNodeThatMadeTheInf) {
  autograd::DetectAnomalyGuard anomaly;
  Tensor x = from_vector<double>({0.0, 4.0}).requires_grad_();
  Tensor loss = x.sqrt().sum();  // forward is finite; d sqrt(x)/dx = 1 / (2 sqrt(x)) is Inf at 0
  std::string message = error_of([&] { loss.backward(); });
  EXPECT_THAT(message, HasSubstr("the backward of Sqrt (SqrtBackward) produced NaN or Inf in the gradient of its input 0"));
  EXPECT_THAT(message, HasSubstr("the gradient flowing into it was finite, so this op made it"));
}

TEST(Anomaly, OffTheSameComputationsRunThrough) {
  ASSERT_FALSE(autograd::anomaly_detection_enabled());
  Tensor x = from_vector<double>({0.0, 4.0}).requires_grad_();
  x.sqrt().sum().backward();
  EXPECT_TRUE(std::isinf(x.grad().to_vector<double>()[0]));
  Tensor y = from_vector<float>({-1.0f}).requires_grad_();
  EXPECT_TRUE(std::isnan(y.log().item<float>()));
}

}  // namespace
