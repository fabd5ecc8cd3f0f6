// tests/core/test_cross_entropy.cc: the fused cross-entropy kernel against the composition
// log_softmax + nll_loss (+ the smoothing term) in float64, for every reduction, with and
// without ignored targets (the default -100 and a class index as ignore_index), with label
// smoothing, for 1-D, 2-D, 3-D and strided logits and for rows long enough to take the
// vectorized exp with a tail (C = 1003): losses and gradients for a random upstream gradient.
// Then bf16 logits (fp32 statistics, one rounding) against float64 on the same values,
// autocast's fp32 result, rows with huge logits (the max shift), and the argument errors.
// PyTorch's values pin the same kernel through tests/golden (cross_entropy*.safetensors);
// finite differences through tests/core/test_gradcheck.cc (Gradcheck.CrossEntropy).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/autocast.h"
#include "core/ops.h"
#include "core/random.h"
#include "tests/core/tensor_compare.h"
#include "tests/test_util.h"

namespace accel {
namespace {

using ::testing::HasSubstr;
using testing::error_of;

const char* reduction_name(Reduction r) {
  return r == Reduction::Mean ? "mean" : r == Reduction::Sum ? "sum" : "none";
}

// Loss and logits gradient of one path, for `upstream` (shaped like the loss) as the gradient.
struct LossAndGrad {
  Tensor loss, grad;
};
LossAndGrad run(const Tensor& logits, const Tensor& target, int64_t ignore_index, Reduction reduction,
                double smoothing, bool fused, const Tensor& upstream) {
  Tensor x = logits.detach().requires_grad_();
  Tensor loss = cross_entropy(x, target, ignore_index, reduction, smoothing, fused);
  loss.backward(upstream.to(loss.dtype()));
  return {loss.detach(), x.grad()};
}

// Every reduction and smoothing, fused against composed, on float64 logits.
void expect_fused_matches_composition(const std::string& what, const Tensor& logits, const Tensor& target,
                                      int64_t ignore_index = -100) {
  Generator gen(3);
  for (Reduction reduction : {Reduction::Mean, Reduction::Sum, Reduction::None}) {
    for (double smoothing : {0.0, 0.1, 1.0}) {
      const Shape loss_shape = reduction == Reduction::None ? target.sizes() : Shape{};
      const Tensor upstream = randn(loss_shape, kFloat64, &gen);
      const LossAndGrad fused = run(logits, target, ignore_index, reduction, smoothing, true, upstream);
      const LossAndGrad composed = run(logits, target, ignore_index, reduction, smoothing, false, upstream);
      const std::string label = what + ", reduction " + reduction_name(reduction) + ", label_smoothing " +
                                std::to_string(smoothing);
      EXPECT_EQ(fused.loss.dtype(), kFloat64) << label;
      EXPECT_TRUE(tensors_close(fused.loss, composed.loss, 1e-12, 1e-13)) << label << ", loss";
      EXPECT_TRUE(tensors_close(fused.grad, composed.grad, 1e-12, 1e-13)) << label << ", gradient";
    }
  }
}

TEST(CrossEntropy, FusedMatchesCompositionInFloat64) {
  Generator gen(1);
  const Tensor logits = randn({9, 7}, kFloat64, &gen) * 3.0;  // (N 9, C 7)
  expect_fused_matches_composition("(9, 7), all counted", logits, from_vector<int64_t>({0, 6, 3, 3, 1, 2, 5, 4, 0}));
  expect_fused_matches_composition("(9, 7), two ignored", logits,
                                   from_vector<int64_t>({0, -100, 3, 3, 1, -100, 5, 4, 0}));
  expect_fused_matches_composition("(9, 7), ignore_index 3", logits,
                                   from_vector<int64_t>({0, 6, 3, 3, 1, 2, 5, 4, 0}), 3);
  expect_fused_matches_composition("(9, 7), int32 targets", logits,
                                   from_vector<int32_t>({0, 6, 3, -100, 1, 2, 5, 4, 0}));
  expect_fused_matches_composition("(5), 0-d target", randn({5}, kFloat64, &gen), scalar_tensor(2, kInt64));
  expect_fused_matches_composition("(2, 5, 3) with (2, 3) targets", randn({2, 5, 3}, kFloat64, &gen),
                                   from_vector<int64_t>({0, 4, -100, 2, 2, 1}, {2, 3}));
  expect_fused_matches_composition("transposed (6, 4)", randn({4, 6}, kFloat64, &gen).t(),
                                   from_vector<int64_t>({3, 0, 1, -100, 2, 2}));
  expect_fused_matches_composition("(5, 1003)", randn({5, 1003}, kFloat64, &gen) * 4.0,
                                   from_vector<int64_t>({1002, 0, 517, -100, 8}));
}

TEST(CrossEntropy, Float32RowsWithTheVectorizedExpMatchFloat64) {
  Generator gen(2);
  const Tensor logits = randn({6, 1003}, kFloat32, &gen) * 4.0;  // 1003 = 125 * 8 + 3: a vector tail
  const Tensor target = from_vector<int64_t>({1002, 0, 517, -100, 8, 999});
  const Tensor upstream = randn({6}, kFloat32, &gen);
  for (double smoothing : {0.0, 0.2}) {
    const LossAndGrad f32 = run(logits, target, -100, Reduction::None, smoothing, true, upstream);
    const LossAndGrad f64 = run(logits.to(kFloat64), target, -100, Reduction::None, smoothing, true, upstream);
    EXPECT_EQ(f32.loss.dtype(), kFloat32);
    EXPECT_TRUE(tensors_close(f32.loss, f64.loss, 1e-5, 1e-6)) << "label_smoothing " << smoothing;
    EXPECT_TRUE(tensors_close(f32.grad, f64.grad, 1e-4, 1e-7)) << "label_smoothing " << smoothing;
  }
}

TEST(CrossEntropy, IgnoredRowsGetZeroLossAndGradient) {
  Generator gen(4);
  const Tensor logits = randn({4, 6}, kFloat32, &gen);
  const Tensor target = from_vector<int64_t>({-100, 2, -100, 5});
  const LossAndGrad none = run(logits, target, -100, Reduction::None, 0.3, true, ones({4}));
  EXPECT_EQ(none.loss.to_vector<float>()[0], 0.0f);
  EXPECT_EQ(none.loss.to_vector<float>()[2], 0.0f);
  EXPECT_TRUE(tensors_close(none.grad.select(0, 0), zeros({6}), 0, 0));
  EXPECT_TRUE(tensors_close(none.grad.select(0, 2), zeros({6}), 0, 0));
  // The mean is over the two counted rows, as torch's.
  const LossAndGrad mean = run(logits, target, -100, Reduction::Mean, 0.3, true, ones({}));
  EXPECT_NEAR(mean.loss.item<float>(), none.loss.sum().item<float>() / 2.0, 1e-6);
  EXPECT_TRUE(tensors_close(mean.grad, none.grad / 2.0, 1e-6, 1e-7));
  // Every target ignored: the mean is 0/0 = NaN, as torch's, and no gradient flows.
  const LossAndGrad all_ignored =
      run(logits, from_vector<int64_t>({-100, -100, -100, -100}), -100, Reduction::Mean, 0.0, true, ones({}));
  EXPECT_TRUE(std::isnan(all_ignored.loss.item<float>()));
  EXPECT_TRUE(tensors_close(all_ignored.grad, zeros({4, 6}), 0, 0));
}

TEST(CrossEntropy, HugeLogitsStayFiniteThroughTheMaxShift) {
  // exp(1000) overflows any float; shifted by the row max the softmax is exact.
  const Tensor logits = from_vector<float>({1000.0f, 999.0f, -1000.0f, 0.0f, 0.5f, 1.0f}, {2, 3});
  const Tensor target = from_vector<int64_t>({1, 0});
  const LossAndGrad f32 = run(logits, target, -100, Reduction::None, 0.1, true, ones({2}));
  const LossAndGrad f64 = run(logits.to(kFloat64), target, -100, Reduction::None, 0.1, false, ones({2}));
  EXPECT_TRUE(tensors_close(f32.loss, f64.loss, 1e-5, 1e-5));
  EXPECT_TRUE(std::isfinite(amax(f32.grad.abs()).item<float>()));
  // The backward's exp(x - lse) inherits the float32 rounding of the saved lse, about
  // |lse| 2^-24 = 6e-5 absolute at lse = 1000 (as every kernel that saves only the
  // log-sum-exp, FlashAttention's among them); near 0, where logits usually are, it is 1e-7.
  EXPECT_TRUE(tensors_close(f32.grad, f64.grad, 1e-5, 1e-4));
}

TEST(CrossEntropy, Bf16LogitsComputeInFp32AndRoundOnce) {
  Generator gen(5);
  // bf16-exact logits: the float64 reference sees the same values the kernel reads.
  const Tensor logits = (randn({16, 37}, kFloat32, &gen) * 3.0).to(kBFloat16);
  const Tensor target = from_vector<int64_t>({0, 36, 5, -100, 9, 9, 1, 30, 2, 3, 4, -100, 6, 7, 8, 10});
  for (Reduction reduction : {Reduction::Mean, Reduction::Sum, Reduction::None}) {
    const Shape loss_shape = reduction == Reduction::None ? Shape{16} : Shape{};
    const Tensor upstream = randn(loss_shape, kFloat32, &gen).to(kBFloat16);
    const LossAndGrad bf16 = run(logits, target, -100, reduction, 0.1, true, upstream);
    const LossAndGrad exact = run(logits.to(kFloat64), target, -100, reduction, 0.1, false, upstream.to(kFloat64));
    EXPECT_EQ(bf16.loss.dtype(), kBFloat16);
    EXPECT_EQ(bf16.grad.dtype(), kBFloat16);
    // One rounding of the result to bf16 (2^-8 relative), plus the upstream gradient's own
    // rounding in the gradient; the absolute floor is for near-zero gradient entries.
    EXPECT_TRUE(tensors_close(bf16.loss, exact.loss, 1.0 / 256, 1e-6)) << reduction_name(reduction);
    EXPECT_TRUE(tensors_close(bf16.grad, exact.grad, 1.0 / 128, 1e-4)) << reduction_name(reduction);
  }
}

TEST(CrossEntropy, AutocastRunsInFp32) {
  Generator gen(6);
  const Tensor logits = randn({4, 5}, kFloat32, &gen);
  const Tensor target = from_vector<int64_t>({0, 4, 2, 1});
  AutocastGuard autocast(kBFloat16);
  const Tensor loss = cross_entropy(logits.to(kBFloat16), target);
  EXPECT_EQ(loss.dtype(), kFloat32);
  EXPECT_TRUE(tensors_close(loss, cross_entropy(logits.to(kBFloat16).to(kFloat32), target), 0, 0));
}

TEST(CrossEntropy, ArgumentErrorsSayWhatWasExpected) {
  const Tensor logits = zeros({2, 5});
  EXPECT_THAT(error_of([&] { cross_entropy(logits, from_vector<int64_t>({0, 7})); }),
              HasSubstr("cross_entropy: target class 7 is out of range: expected values in [0, 5)"));
  EXPECT_THAT(error_of([&] { cross_entropy(logits, from_vector<int64_t>({-1, 0})); }),
              HasSubstr("cross_entropy: target class -1 is out of range: expected values in [0, 5)"));
  EXPECT_THAT(error_of([&] { cross_entropy(logits, from_vector<int64_t>({0, 7}), -100, Reduction::Mean, 0.0, false); }),
              HasSubstr("cross_entropy: target class 7 is out of range"));
  EXPECT_EQ(error_of([&] { cross_entropy(logits, from_vector<int64_t>({0, 7}), 7); }), "");  // 7 is ignore_index
  EXPECT_THAT(error_of([&] { cross_entropy(logits, from_vector<int64_t>({0, 1, 2})); }),
              HasSubstr("cross_entropy: expected target of shape [2] for logits of shape [2, 5] but got [3]"));
  EXPECT_THAT(error_of([&] { cross_entropy(logits, from_vector<float>({0.0f, 1.0f})); }),
              HasSubstr("cross_entropy: expected an int64 or int32 index tensor but got dtype float32"));
  EXPECT_THAT(error_of([&] { cross_entropy(logits, from_vector<int64_t>({0, 1}), -100, Reduction::Mean, 1.5); }),
              HasSubstr("cross_entropy: label_smoothing must be in [0, 1], got 1.5"));
}

}  // namespace
}  // namespace accel
