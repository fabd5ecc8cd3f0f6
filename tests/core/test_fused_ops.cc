// tests/core/test_fused_ops.cc: the fused ops besides attention against their compositions in
// float64: linear_gelu (oneDNN's GELU epilogue when nothing is recorded, one training node that
// saves gelu' when recording in float32, linear then gelu otherwise; also in bf16 under
// autocast), mul_column_sum's independence of the thread count, GELU's training forward (which
// saves gelu'(x) for backward instead of x: the gradient bit for bit what the recomputing
// backward kernel gives) and its accuracy in the negative tail, and add_layer_norm
// (layer_norm(x + residual) in one pass; outputs and the gradients of x, residual, weight and
// bias; the composition for broadcasting; fp32 under autocast), and sum_of_squares (the gradient
// norm's one pass) against float64 at any thread count.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/autocast.h"
#include "core/autograd/grad_mode.h"
#include "core/error.h"
#include "core/kernels.h"
#include "core/parallel.h"
#include "core/ops.h"
#include "tests/core/tensor_compare.h"

namespace accel {
namespace {

TEST(LinearGelu, FusedEpilogueMatchesLinearThenGelu) {
  manual_seed(9);
  Tensor x = randn({3, 7, 16}), w = randn({24, 16}), b = randn({24});
  Tensor fused;
  {
    NoGradGuard no_grad;
    fused = linear_gelu(x, w, b);
  }
  Tensor reference = gelu(linear(x.to(kFloat64), w.to(kFloat64), b.to(kFloat64)));
  EXPECT_EQ(fused.sizes(), (Shape{3, 7, 24}));
  EXPECT_TRUE(tensors_close(fused, reference, 1e-5, 1e-6));
}

// Recording in float32, linear_gelu is one node: the GEMM without its bias, then one pass that
// adds the bias and saves gelu'; backward multiplies by it and sums the bias gradient in the
// same pass. Output and the gradients of x, weight and bias against float64 linear then gelu,
// with and without a bias, over more rows than one block of the column sum.
TEST(LinearGelu, TrainingNodeMatchesLinearThenGeluInFloat64) {
  manual_seed(10);
  for (bool with_bias : {true, false}) {
    Tensor x = randn({3, 70, 16}), w = randn({24, 16}), b = with_bias ? randn({24}) : Tensor(), g = randn({3, 70, 24});
    Tensor xr = x.clone().requires_grad_(), wr = w.clone().requires_grad_();
    Tensor br = with_bias ? b.clone().requires_grad_() : Tensor();
    Tensor out = linear_gelu(xr, wr, br);
    out.backward(g);
    Tensor xd = x.to(kFloat64).requires_grad_(), wd = w.to(kFloat64).requires_grad_();
    Tensor bd = with_bias ? b.to(kFloat64).requires_grad_() : Tensor();
    Tensor reference = gelu(linear(xd, wd, bd));
    reference.backward(g.to(kFloat64));
    const std::string what = with_bias ? "with bias" : "without bias";
    EXPECT_TRUE(tensors_close(out, reference, 1e-5, 1e-5)) << what;
    EXPECT_TRUE(tensors_close(xr.grad(), xd.grad(), 1e-5, 1e-5)) << what;
    EXPECT_TRUE(tensors_close(wr.grad(), wd.grad(), 1e-5, 1e-5)) << what;
    if (with_bias) {
      EXPECT_TRUE(tensors_close(br.grad(), bd.grad(), 1e-5, 1e-5));
    }
  }
}

// The column sums of mul_column_sum do not depend on the thread count (fixed row blocks).
TEST(LinearGelu, MulColumnSumIsTheSameAtAnyThreadCount) {
  manual_seed(11);
  Tensor a = randn({1000, 37}), b = randn({1000, 37});
  auto run = [&](int threads) {
    const int before = get_num_threads();
    set_num_threads(threads);
    Tensor out = Tensor::empty(a.sizes()), sums = Tensor::empty({37});
    kernels::mul_column_sum(a.device(), a, b, out, sums);
    set_num_threads(before);
    return std::pair{out, sums};
  };
  auto [out1, sums1] = run(1);
  auto [out2, sums2] = run(2);
  EXPECT_TRUE(equal(out1, out2));
  EXPECT_TRUE(equal(sums1, sums2));
  EXPECT_TRUE(equal(out1, a * b));
  EXPECT_TRUE(tensors_close(sums1, (a.to(kFloat64) * b.to(kFloat64)).sum({0}), 1e-6, 1e-6));
}

TEST(LinearGelu, Bf16UnderAutocastAppliesGeluToTheFp32AccumulatorAndRoundsOnce) {
  manual_seed(10);
  // bf16-exact inputs, so the only roundings are the accumulation's and the result's.
  Tensor x = randn({4, 9, 32}).to(kBFloat16), w = randn({40, 32}).to(kBFloat16), b = randn({40}).to(kBFloat16);
  Tensor fused;
  {
    NoGradGuard no_grad;
    AutocastGuard autocast(kBFloat16);
    fused = linear_gelu(x.to(kFloat32), w.to(kFloat32), b.to(kFloat32));  // fp32 masters, cast by autocast
  }
  ASSERT_EQ(fused.dtype(), kBFloat16);
  EXPECT_EQ(fused.sizes(), (Shape{4, 9, 40}));
  Tensor exact = gelu(linear(x.to(kFloat64), w.to(kFloat64), b.to(kFloat64)));
  // One rounding to bf16 (2^-8 relative) plus fp32 accumulation error; linear then gelu in
  // bf16 rounds twice, which this bound also admits, but never more than that.
  EXPECT_TRUE(tensors_close(fused.to(kFloat64), exact, 1.0 / 256, 1e-4));
}

// The recorded gelu saves gelu'(x) from its forward; backward multiplies by it. In float32 the
// output and the gradient are exactly those of the untracked forward and of the backward kernel
// that recomputes gelu'(x) from x, for both forms, over sizes that end mid-chunk and mid-vector.
TEST(GeluTraining, SavedDerivativeGivesTheRecomputedGradientBitForBit) {
  manual_seed(4);
  for (const std::string approximate : {"none", "tanh"}) {
    Tensor x = randn({37, 129}) * 3.0, g = randn({37, 129});
    Tensor untracked;
    {
      NoGradGuard no_grad;
      untracked = gelu(x, approximate);
    }
    Tensor xr = x.clone().requires_grad_(true);
    Tensor y = gelu(xr, approximate);
    y.backward(g);
    Tensor recomputed = Tensor::empty(x.sizes(), kFloat32, x.device());
    kernels::binary(x.device(), approximate == "tanh" ? BinaryOp::GeluTanhBackward : BinaryOp::GeluBackward, g, x,
                    recomputed);
    EXPECT_TRUE(equal(y.detach(), untracked)) << approximate;
    EXPECT_TRUE(equal(xr.grad(), recomputed)) << approximate;
    // And against float64 (the absolute slack is float32's cancellation in 1 + tanh where the
    // tanh form's derivative is tiny).
    Tensor xd = x.to(kFloat64).requires_grad_(true);
    gelu(xd, approximate).backward(g.to(kFloat64));
    EXPECT_TRUE(tensors_close(xr.grad(), xd.grad(), 1e-5, 1e-5)) << approximate;
  }
}

// float32 GELU keeps its relative accuracy in the negative tail, where cdf(x) is tiny:
// 0.5 * (1 + erf(x / sqrt 2)) would cancel there (1e-5 relative at x = -3, every digit lost
// below -9); the kernels take cdf(x) from erfc instead. Both outputs against a double erfc
// reference on [-10, 10], training forward and plain forward alike, and float64 at -9 and -12.
TEST(GeluTraining, AccurateInTheNegativeTailInFloat32AndFloat64) {
  Tensor x = arange(-10000, 10001, 1, kFloat32) * 1e-3;  // (20001), step 0.001
  Tensor xr = x.clone().requires_grad_(true);
  Tensor y = gelu(xr);
  y.backward(ones_like(y));
  Tensor plain;
  {
    NoGradGuard no_grad;
    plain = gelu(x);
  }
  EXPECT_TRUE(equal(plain, y.detach()));
  // The reference in double through erfc, which (unlike 1 + erf) does not cancel either.
  std::vector<double> expected_y, expected_grad;
  for (float v : x.to_vector<float>()) {
    const double xv = v, cdf = 0.5 * std::erfc(-xv / std::sqrt(2.0));
    expected_y.push_back(xv * cdf);
    expected_grad.push_back(cdf + xv * std::exp(-0.5 * xv * xv) / std::sqrt(2.0 * M_PI));
  }
  EXPECT_TRUE(tensors_close(y, from_vector<double>(expected_y, {20001}), 2e-6, 1e-37));
  // gelu' = cdf + x pdf crosses zero near x = -0.75, where the two terms cancel: an absolute
  // slack of a few float32 ulps of the terms.
  EXPECT_TRUE(tensors_close(xr.grad(), from_vector<double>(expected_grad, {20001}), 2e-6, 2e-7));
  // float64 (the scalar kernels) too, against mpmath at 30 digits.
  Tensor xd = from_vector<double>({-9.0, -12.0}, {2}).requires_grad_(true);
  Tensor yd = gelu(xd);
  yd.backward(ones_like(yd));
  EXPECT_TRUE(tensors_close(yd, from_vector<double>({-1.015729565358456583e-18, -2.1317785344932147972e-32}, {2}),
                            1e-13, 0.0));
  EXPECT_TRUE(tensors_close(xd.grad(), from_vector<double>({-9.138937373906639251e-18, -2.5578956616748956241e-31}, {2}),
                            1e-13, 0.0));
}

// bf16 saves the derivative rounded to bf16, so the gradient carries one rounding more than
// the recomputing kernel's: within two bf16 roundings (2^-8 relative each) of the float64 gradient,
// with an absolute slack for float32's cancellation where gelu'(x) crosses zero (x near -0.75).
TEST(GeluTraining, Bf16GradientIsWithinTwoRoundingsOfFloat64) {
  manual_seed(5);
  Tensor x = (randn({64, 100}) * 3.0).to(kBFloat16), g = randn({64, 100}).to(kBFloat16);
  Tensor xr = x.clone().requires_grad_(true);
  gelu(xr).backward(g);
  ASSERT_EQ(xr.grad().dtype(), kBFloat16);
  Tensor xd = x.to(kFloat64).requires_grad_(true);
  gelu(xd).backward(g.to(kFloat64));
  EXPECT_TRUE(tensors_close(xr.grad(), xd.grad(), 1.0 / 128, 1e-5));
}

TEST(AddLayerNorm, MatchesAddThenLayerNormInFloat64) {
  manual_seed(11);
  Tensor x = randn({2, 5, 12}), residual = randn({2, 5, 12}), w = randn({12}), b = randn({12});
  auto leaves = [](DType dtype, std::initializer_list<Tensor> ts) {
    std::vector<Tensor> out;
    for (const Tensor& t : ts) out.push_back(t.to(dtype).detach().requires_grad_());
    return out;
  };
  std::vector<Tensor> f = leaves(kFloat32, {x, residual, w, b}), d = leaves(kFloat64, {x, residual, w, b});
  Tensor fused = add_layer_norm(f[0], f[1], {12}, f[2], f[3], 1e-12);
  Tensor reference = layer_norm(d[0] + d[1], {12}, d[2], d[3], 1e-12);
  EXPECT_TRUE(tensors_close(fused, reference, 1e-5, 1e-5));
  Tensor weight = randn({2, 5, 12});
  (fused * weight).sum().backward();
  (reference * weight.to(kFloat64)).sum().backward();
  const char* names[] = {"x", "residual", "weight", "bias"};
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(tensors_close(f[i].grad(), d[i].grad(), 1e-4, 1e-5)) << names[i];
  {
    NoGradGuard no_grad;  // inference: no sum kept, same numbers
    EXPECT_TRUE(tensors_close(add_layer_norm(x, residual, {12}, w, b, 1e-12), reference.detach(), 1e-5, 1e-5));
  }
}

TEST(AddLayerNorm, BroadcastingTakesTheCompositionAndAutocastNormalizesInFp32) {
  manual_seed(12);
  Tensor x = randn({3, 8}), row = randn({8}), w = randn({8}), b = randn({8});
  EXPECT_TRUE(tensors_close(add_layer_norm(x, row, {8}, w, b), layer_norm(x + row, {8}, w, b), 1e-6, 1e-6));
  AutocastGuard guard(kBFloat16);
  Tensor low = x.to(kBFloat16);
  Tensor out = add_layer_norm(low, x, {8}, w, b);
  EXPECT_EQ(out.dtype(), kFloat32);  // layer_norm runs in fp32 under autocast
  EXPECT_TRUE(tensors_close(out, layer_norm(low + x, {8}, w, b), 1e-6, 1e-6));
}

// sum_of_squares (the gradient norm's one pass): the float64 composition's value over tensors
// of every size class (empty, within one block, across blocks), the same bits at any thread
// count, and clear errors for mixed dtypes and no tensors.
TEST(SumOfSquares, MatchesFloat64AndDoesNotDependOnTheThreadCount) {
  for (DType dtype : {kFloat32, kBFloat16, kFloat64}) {
    std::vector<Tensor> tensors;
    double expected = 0;
    for (int64_t size : {int64_t(0), int64_t(5), int64_t(16384 * 2 + 3), int64_t(1000)}) {
      tensors.push_back(randn({size}).to(dtype));
      Tensor wide = tensors.back().to(kFloat64);
      expected += sum(wide * wide).item<double>();
    }
    const int threads = get_num_threads();
    set_num_threads(1);
    const double one_thread = sum_of_squares(tensors).item<double>();
    set_num_threads(threads);
    Tensor result = sum_of_squares(tensors);
    EXPECT_EQ(result.dtype(), kFloat64);
    EXPECT_NEAR(result.item<double>(), expected, 1e-12 * expected) << dtype_name(dtype);
    EXPECT_EQ(result.item<double>(), one_thread) << dtype_name(dtype);
  }
  EXPECT_THROW(sum_of_squares({}), Error);
  try {
    sum_of_squares({randn({3}), randn({3}).to(kBFloat16)});
    ADD_FAILURE() << "mixed dtypes were accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("one dtype on one device"));
  }
}

}  // namespace
}  // namespace accel
