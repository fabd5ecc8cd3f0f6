// Unit tests of the tensor core: dtypes, views, printing, factories, basic ops.
#include <gtest/gtest.h>

#include "core/ops.h"

using namespace accel;

TEST(Tensor, ZerosAndShape) {
  Tensor t = zeros({2, 3});
  EXPECT_EQ(t.numel(), 6);
  EXPECT_EQ(t.sum().item<float>(), 0.0f);
}
