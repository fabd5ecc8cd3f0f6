// tests/core/test_autocast.cc: the casts autocast keeps. Under no-grad a weight's 16-bit copy
// is kept across regions while the weight is unchanged (DerivedTensor checks its storage,
// layout and version) and made again after any in-place write, set_data, a dtype switch or
// clear_cache(); a recording cast replaces it; tensors that are not weights, and storage that
// ZeRO stage 3 releases, are never kept; dead weights' copies are dropped.
#include <gtest/gtest.h>

#include "core/autocast.h"
#include "core/autograd/grad_mode.h"
#include "core/derived_tensor.h"
#include "core/ops.h"
#include "tests/core/tensor_compare.h"

namespace accel {
namespace {

Tensor inference_cast(const Tensor& t, DType dtype = kBFloat16) {
  NoGradGuard no_grad;
  AutocastGuard autocast(dtype);
  return autocast::to_low_precision(t);
}

Tensor weight(const Shape& shape = {8, 4}) { return randn(shape).requires_grad_(true); }

TEST(AutocastInference, KeepsAWeightsCastAcrossRegionsUntilItChanges) {
  autocast::clear_cache();
  Tensor w = weight();
  Tensor first = inference_cast(w);
  EXPECT_EQ(first.dtype(), kBFloat16);
  EXPECT_EQ(first.grad_fn(), nullptr);
  EXPECT_TRUE(inference_cast(w).is_same(first));
  {
    NoGradGuard no_grad;
    w.add_(ones({8, 4}));  // an optimizer step's in-place write
  }
  Tensor after = inference_cast(w);
  EXPECT_FALSE(after.is_same(first));
  EXPECT_TRUE(tensors_close(after, w.detach().to(kBFloat16), 0, 0));
  EXPECT_TRUE(inference_cast(w).is_same(after));
}

TEST(AutocastInference, SetDataDtypeSwitchAndClearCacheMakeANewCopy) {
  autocast::clear_cache();
  Tensor w = weight();
  Tensor kept = inference_cast(w);
  w.set_data(randn({8, 4}));  // how Module::to and load paths give a weight new memory
  Tensor moved = inference_cast(w);
  EXPECT_FALSE(moved.is_same(kept));
  EXPECT_TRUE(tensors_close(moved, w.detach().to(kBFloat16), 0, 0));

  Tensor half = inference_cast(w, kFloat16);
  EXPECT_EQ(half.dtype(), kFloat16);
  EXPECT_TRUE(tensors_close(half, w.detach().to(kFloat16), 0, 0));

  Tensor before_clear = inference_cast(w, kFloat16);
  EXPECT_TRUE(before_clear.is_same(half));
  autocast::clear_cache();
  EXPECT_FALSE(inference_cast(w, kFloat16).is_same(half));
}

TEST(AutocastInference, ARecordingCastReplacesTheInferenceCopy) {
  autocast::clear_cache();
  Tensor w = weight();
  Tensor inference = inference_cast(w);
  EXPECT_EQ(inference.use_count(), 2);  // here and in the cache
  Tensor recorded;
  {
    AutocastGuard autocast(kBFloat16);
    recorded = autocast::to_low_precision(w);
  }
  EXPECT_NE(recorded.grad_fn(), nullptr);
  EXPECT_EQ(inference.use_count(), 1);  // the cache let it go: one 16-bit copy per weight
  Tensor again = inference_cast(w);
  EXPECT_FALSE(again.is_same(inference));
  EXPECT_EQ(again.grad_fn(), nullptr);  // never the recorded cast, which has history
}

TEST(AutocastInference, KeepsOnlyWeights) {
  autocast::clear_cache();
  Tensor activation = randn({8, 4});  // requires no grad
  EXPECT_FALSE(inference_cast(activation).is_same(inference_cast(activation)));
  Tensor w = weight();
  Tensor non_leaf = w * 2.0;
  EXPECT_FALSE(inference_cast(non_leaf).is_same(inference_cast(non_leaf)));
}

TEST(AutocastInference, NeverKeepsStorageThatZeroStage3Releases) {
  autocast::clear_cache();
  Tensor w = weight();
  w.storage()->release();
  w.storage()->reallocate();
  {
    NoGradGuard no_grad;
    w.fill_(0.5);
  }
  Tensor cast = inference_cast(w);
  EXPECT_TRUE(tensors_close(cast, full({8, 4}, 0.5).to(kBFloat16), 0, 0));
  EXPECT_EQ(cast.use_count(), 1);
  EXPECT_FALSE(inference_cast(w).is_same(cast));
}

TEST(AutocastInference, DropsTheCopiesOfDeadWeights) {
  autocast::clear_cache();
  Tensor orphan;
  {
    Tensor w = weight();
    orphan = inference_cast(w);
    EXPECT_EQ(orphan.use_count(), 2);
  }
  inference_cast(weight());  // a new entry sweeps the entries whose weight is gone
  EXPECT_EQ(orphan.use_count(), 1);
}

TEST(DerivedTensor, RecomputesWhenASourceChangesItsStorageLayoutOrVersion) {
  Tensor base = randn({4, 6});
  Tensor a = base.narrow(0, 0, 2), b = base.narrow(0, 2, 2);
  int computed = 0;
  DerivedTensor kept;
  auto sum = [&](const Tensor& x, const Tensor& y) {
    return kept.get({&x, &y}, kFloat32, [&] {
      ++computed;
      return x + y;
    });
  };
  Tensor first = sum(a, b);
  EXPECT_TRUE(sum(a, b).is_same(first));
  EXPECT_TRUE(sum(a.view({2, 6}), b).is_same(first));  // another handle on the same elements
  EXPECT_EQ(computed, 1);
  EXPECT_FALSE(sum(b, a).is_same(first));  // same storage, other offsets
  EXPECT_EQ(computed, 2);
  Tensor swapped = sum(b, a);
  base.narrow(0, 3, 1).fill_(1.0);  // a write anywhere in the storage bumps its version
  Tensor refreshed = sum(b, a);
  EXPECT_FALSE(refreshed.is_same(swapped));
  EXPECT_TRUE(tensors_close(refreshed, b + a, 0, 0));
  EXPECT_FALSE(sum(b.t(), a.t()).is_same(refreshed));  // strides
  EXPECT_EQ(computed, 4);
  EXPECT_FALSE(kept.is_stale());
  Tensor copy = b.clone();
  sum(copy, a);
  copy = Tensor();
  EXPECT_TRUE(kept.is_stale());  // a source's storage died: it can never match again
}

}  // namespace
}  // namespace accel
