// Packed weights for CPU inference GEMMs (core/weight_packing.h): when a B operand is packed
// (its second inference use at one version), that the packed product equals the plain one and
// a float64 reference, and every way its copy must go away: an in-place write, autograd turned
// on, a backward pass (never packs), the weight freed, packing switched off; and threads sharing
// the cache (scripts/sanitize.sh runs that case under ThreadSanitizer).
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "core/autograd/grad_mode.h"
#include "core/ops.h"
#include "core/random.h"
#include "core/weight_packing.h"

using namespace accel;

namespace {

class WeightPacking : public ::testing::Test {
 protected:
  void SetUp() override {
    set_cpu_weight_packing(true);
    cpu_release_packed_weights();
  }
  void TearDown() override { cpu_release_packed_weights(); }
};

size_t packed_weights() { return cpu_packed_weight_stats().weights; }

// Two inference uses of a weight no other test packed: the second packs it.
void pack_by_using_twice(const Tensor& x, const Tensor& weight) {
  linear(x, weight);
  linear(x, weight);
  EXPECT_EQ(packed_weights(), 1u) << "two inference uses should have packed the weight";
}

TEST_F(WeightPacking, SecondInferenceUsePacksAndMatchesThePlainProduct) {
  Generator gen(11);
  // Rows of 768 floats (3 KiB apart), as BERT-base's; more rows than the aliasing copy's threshold.
  Tensor x = randn({600, 768}, kFloat32, &gen), weight = randn({256, 768}, kFloat32, &gen),
         bias = randn({256}, kFloat32, &gen);
  Tensor expected = linear(x.to(kFloat64), weight.to(kFloat64), bias.to(kFloat64));
  NoGradGuard no_grad;
  const size_t packs_before = cpu_packed_weight_stats().packs;
  Tensor plain = linear(x, weight, bias);  // first use: remembered, multiplied as it is
  EXPECT_EQ(packed_weights(), 0u);
  Tensor packing = linear(x, weight, bias);  // second use at one version: packs now
  EXPECT_EQ(packed_weights(), 1u);
  EXPECT_GE(cpu_packed_weight_stats().bytes, size_t(weight.numel()) * 4);
  Tensor packed = linear(x, weight, bias);
  EXPECT_EQ(cpu_packed_weight_stats().packs, packs_before + 1) << "the third use must reuse the packed copy";
  EXPECT_TRUE(allclose(plain.to(kFloat64), expected, 1e-5, 1e-4));  // sums of 768 products of ~N(0, 1)
  EXPECT_TRUE(allclose(packing, plain, 1e-6, 1e-6));
  EXPECT_TRUE(allclose(packed, plain, 1e-6, 1e-6));
  // linear_gelu (oneDNN's GELU post-op) on the same packed weight.
  Tensor gelu_plain = gelu(plain);
  EXPECT_TRUE(allclose(linear_gelu(x, weight, bias), gelu_plain, 1e-5, 1e-5));
  EXPECT_TRUE(allclose(linear_gelu(x, weight, bias), gelu_plain, 1e-5, 1e-5));
}

TEST_F(WeightPacking, BatchedProductWithOneMatrixFoldsTheBatchIntoRows) {
  Generator gen(12);
  Tensor a = randn({3, 200, 64}, kFloat32, &gen), b = randn({64, 96}, kFloat32, &gen);
  Tensor expected = matmul(a.to(kFloat64), b.to(kFloat64));  // (3, 200, 96)
  NoGradGuard no_grad;
  for (int use = 0; use < 3; ++use) EXPECT_TRUE(allclose(matmul(a, b).to(kFloat64), expected, 1e-5, 1e-5)) << use;
  EXPECT_EQ(packed_weights(), 1u);
  // A batch whose matrices are not one after another (a transposed view) cannot be folded:
  // multiplied as it is, and still right.
  Tensor strided = a.transpose(0, 1).contiguous().transpose(0, 1);  // (3, 200, 64), batch stride 64
  for (int use = 0; use < 2; ++use) {
    EXPECT_TRUE(allclose(matmul(strided, b).to(kFloat64), expected, 1e-5, 1e-5)) << use;
  }
}

TEST_F(WeightPacking, InPlaceWriteDropsTheCopyAndTheNextProductSeesTheNewValues) {
  Generator gen(13);
  Tensor x = randn({64, 32}, kFloat32, &gen), weight = randn({48, 32}, kFloat32, &gen);
  NoGradGuard no_grad;
  pack_by_using_twice(x, weight);
  weight.mul_(2.0);  // what an optimizer step does: same storage, new version
  Tensor expected = linear(x.to(kFloat64), weight.to(kFloat64));
  EXPECT_TRUE(allclose(linear(x, weight).to(kFloat64), expected, 1e-5, 1e-5));
  EXPECT_EQ(packed_weights(), 0u) << "a changed weight's copy is dropped, and the first use after is plain";
  EXPECT_TRUE(allclose(linear(x, weight).to(kFloat64), expected, 1e-5, 1e-5));
  EXPECT_EQ(packed_weights(), 1u);
}

TEST_F(WeightPacking, TrainingNeverPacksAndDropsCopiesFromEvaluation) {
  Generator gen(14);
  Tensor x = randn({64, 32}, kFloat32, &gen), weight = randn({48, 32}, kFloat32, &gen).requires_grad_();
  {
    NoGradGuard no_grad;  // evaluation packs the weight
    pack_by_using_twice(x, weight);
  }
  for (int step = 0; step < 3; ++step) {  // forward with autograd on, backward twice at one version
    Tensor y = linear(x, weight);
    EXPECT_EQ(packed_weights(), 0u) << "step " << step << ": autograd on drops the evaluation's copy";
    y.sum().backward(Tensor(), /*retain_graph=*/true);
    y.sum().backward();  // dY @ W in each pass runs with grad mode off, but inside backward
    EXPECT_EQ(packed_weights(), 0u) << "step " << step << ": a backward pass packed";
  }
}

TEST_F(WeightPacking, FreedWeightsCopyGoesWithTheNextNewWeight) {
  Generator gen(15);
  Tensor x = randn({64, 32}, kFloat32, &gen);
  NoGradGuard no_grad;
  {
    Tensor weight = randn({48, 32}, kFloat32, &gen);
    pack_by_using_twice(x, weight);
  }
  // Another weight, possibly at the freed one's address: its first use sweeps the freed entry
  // and is not mistaken for the old weight's second.
  Tensor other = randn({48, 32}, kFloat32, &gen);
  Tensor expected = linear(x.to(kFloat64), other.to(kFloat64));
  EXPECT_TRUE(allclose(linear(x, other).to(kFloat64), expected, 1e-5, 1e-5));
  EXPECT_EQ(packed_weights(), 0u);
  EXPECT_EQ(cpu_packed_weight_stats().bytes, 0u);
}

TEST_F(WeightPacking, SwitchedOffDropsEveryCopyAndPacksNothing) {
  Generator gen(16);
  Tensor x = randn({64, 32}, kFloat32, &gen), weight = randn({48, 32}, kFloat32, &gen);
  NoGradGuard no_grad;
  pack_by_using_twice(x, weight);
  set_cpu_weight_packing(false);
  EXPECT_FALSE(cpu_weight_packing());
  EXPECT_EQ(packed_weights(), 0u);
  for (int use = 0; use < 3; ++use) linear(x, weight);
  EXPECT_EQ(packed_weights(), 0u);
  set_cpu_weight_packing(true);
}

TEST_F(WeightPacking, ProductsOfOtherRowCountsReuseOrBypassTheOneCopy) {
  Generator gen(18);
  Tensor weight = randn({96, 64}, kFloat32, &gen), bias = randn({96}, kFloat32, &gen);
  NoGradGuard no_grad;
  linear(randn({512, 64}, kFloat32, &gen), weight, bias);
  linear(randn({512, 64}, kFloat32, &gen), weight, bias);
  ASSERT_EQ(packed_weights(), 1u);
  const size_t packs = cpu_packed_weight_stats().packs;
  // oneDNN may want another layout for few rows; either way the one copy stays and is not remade.
  for (int64_t rows : {1, 8, 100, 512, 3}) {
    Tensor x = randn({rows, 64}, kFloat32, &gen);
    Tensor expected = linear(x.to(kFloat64), weight.to(kFloat64), bias.to(kFloat64));
    EXPECT_TRUE(allclose(linear(x, weight, bias).to(kFloat64), expected, 1e-5, 1e-5)) << rows << " rows";
  }
  EXPECT_EQ(packed_weights(), 1u);
  EXPECT_EQ(cpu_packed_weight_stats().packs, packs);
}

TEST_F(WeightPacking, ConcurrentInferenceOnSharedWeights) {
  Generator gen(19);
  Tensor weight = randn({96, 64}, kFloat32, &gen), other = randn({80, 64}, kFloat32, &gen);
  Tensor x = randn({32, 64}, kFloat32, &gen);
  Tensor expected = linear(x.to(kFloat64), weight.to(kFloat64));
  Tensor expected_other = linear(x.to(kFloat64), other.to(kFloat64));
  // Threads pack, reuse and (one of them releasing every copy now and then) drop the same copies.
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      NoGradGuard no_grad;  // grad mode is per thread
      for (int use = 0; use < 40; ++use) {
        if (t == 2 && use % 10 == 5) cpu_release_packed_weights();
        if (!allclose(linear(x, weight).to(kFloat64), expected, 1e-5, 1e-5)) ++wrong;
        if (!allclose(linear(x, other).to(kFloat64), expected_other, 1e-5, 1e-5)) ++wrong;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(wrong.load(), 0);
}

TEST_F(WeightPacking, SixteenBitWeightsMatchThePlainProduct) {
  Generator gen(17);
  for (DType dtype : {kBFloat16, kFloat16}) {
    SCOPED_TRACE(dtype_name(dtype));
    Tensor x = randn({128, 64}, kFloat32, &gen).to(dtype), weight = randn({96, 64}, kFloat32, &gen).to(dtype);
    NoGradGuard no_grad;
    Tensor plain = linear(x, weight);
    // Packed only where the CPU multiplies this dtype natively; the same rounding either way.
    for (int use = 0; use < 2; ++use) {
      EXPECT_TRUE(allclose(linear(x, weight).to(kFloat32), plain.to(kFloat32), 1e-6, 1e-6));
    }
  }
}

}  // namespace
