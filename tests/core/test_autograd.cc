// Autograd engine behaviour: accumulation into leaves, retain_graph, the freed-graph error,
// the in-place version check, NoGradGuard, detach, hooks (including the post-accumulate
// hook DDP relies on), and the order in which gradients become ready.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/autograd/grad_mode.h"
#include "core/autograd/node.h"
#include "core/ops.h"

using namespace accel;
using ::testing::HasSubstr;

namespace {
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an accel::Error";
  return "";
}
}  // namespace

TEST(Autograd, ChainRuleAndAccumulation) {
  Tensor x = from_vector<float>({1, 2, 3}).requires_grad_();
  Tensor y = (x * x).sum();  // dy/dx = 2x
  y.backward();
  EXPECT_EQ(x.grad().to_vector<float>(), (std::vector<float>{2, 4, 6}));
  (x * 3.0).sum().backward();  // accumulates
  EXPECT_EQ(x.grad().to_vector<float>(), (std::vector<float>{5, 7, 9}));
  EXPECT_TRUE(x.is_leaf());
  EXPECT_FALSE(y.is_leaf());
  EXPECT_EQ(y.grad_fn()->name(), "SumBackward");
}

TEST(Autograd, ExplicitGradientForNonScalars) {
  Tensor x = from_vector<float>({1, 2}).requires_grad_();
  Tensor y = x * 2.0;
  EXPECT_THAT(error_of([&] { y.backward(); }), HasSubstr("only for one-element outputs"));
  y.backward(from_vector<float>({1, 10}));
  EXPECT_EQ(x.grad().to_vector<float>(), (std::vector<float>{2, 20}));
}

TEST(Autograd, SecondBackwardThroughFreedGraphFails) {
  Tensor x = from_vector<float>({1, 2}).requires_grad_();
  Tensor y = (x.exp() * x).sum();
  y.backward();
  EXPECT_THAT(error_of([&] { y.backward(); }), HasSubstr("backward through the graph a second time"));
}

TEST(Autograd, RetainGraphAllowsTwoBackwards) {
  Tensor x = from_vector<float>({1, 2}).requires_grad_();
  Tensor y = (x.exp() * x).sum();
  y.backward(Tensor(), /*retain_graph=*/true);
  Tensor first = x.grad().clone();
  y.backward();
  EXPECT_TRUE(allclose(x.grad(), first * 2.0));
}

TEST(Autograd, InPlaceChangeOfSavedTensorIsAnError) {
  Tensor w = from_vector<float>({1, 2});
  Tensor x = from_vector<float>({3, 4}).requires_grad_();
  Tensor y = (x * w).sum();  // saves w to compute dy/dx
  w.add_(1.0);
  EXPECT_THAT(error_of([&] { y.backward(); }),
              HasSubstr("saved for backward was modified by an in-place operation (saved at version 0, now version 1)"));
}

TEST(Autograd, InPlaceOnTensorThatRequiresGradIsRefused) {
  Tensor x = from_vector<float>({3, 4}).requires_grad_();
  EXPECT_THAT(error_of([&] { x.add_(1.0); }), HasSubstr("add_: in-place operation on a tensor of shape [2] that requires grad"));
  Tensor y = x * 2.0;
  EXPECT_THAT(error_of([&] { y.mul_(2.0); }), HasSubstr("requires grad"));
  NoGradGuard no_grad;  // an optimizer update
  x.sub_(from_vector<float>({1, 1}));
  EXPECT_EQ(x.to_vector<float>(), (std::vector<float>{2, 3}));
}

TEST(Autograd, NoGradGuardAndDetach) {
  Tensor x = ones({2}).requires_grad_();
  {
    NoGradGuard no_grad;
    Tensor y = x * 2.0;
    EXPECT_FALSE(y.requires_grad());
  }
  Tensor d = x.detach();
  EXPECT_FALSE(d.requires_grad());
  EXPECT_EQ(d.storage().get(), x.storage().get());
  EXPECT_THAT(error_of([&] { (d * 2.0).sum().backward(); }), HasSubstr("does not require grad"));
}

TEST(Autograd, LeafHooksAndPostAccumulateHooks) {
  Tensor x = ones({3}).requires_grad_();
  int post_calls = 0;
  x.register_hook([](const Tensor& g) { return g * 10.0; });  // replaces the gradient
  x.register_post_accumulate_grad_hook([&](const Tensor& leaf) {
    ++post_calls;
    EXPECT_EQ(leaf.grad().to_vector<float>(), (std::vector<float>{10, 10, 10}));
  });
  // x is used twice: the hook still sees one summed gradient, once.
  (x + x * 0.0).sum().backward();
  EXPECT_EQ(post_calls, 1);
  EXPECT_EQ(x.grad().to_vector<float>(), (std::vector<float>{10, 10, 10}));
}

TEST(Autograd, NonLeafHookAndRetainGrad) {
  Tensor x = ones({2}).requires_grad_();
  Tensor h = x * 3.0;
  h.retain_grad();
  Tensor seen;
  h.register_hook([&](const Tensor& g) {
    seen = g.clone();
    return Tensor();
  });
  (h * h).sum().backward();
  EXPECT_EQ(seen.to_vector<float>(), (std::vector<float>{6, 6}));
  EXPECT_EQ(h.grad().to_vector<float>(), (std::vector<float>{6, 6}));
  EXPECT_EQ(x.grad().to_vector<float>(), (std::vector<float>{18, 18}));
}

TEST(Autograd, SavedTensorsAreFreedAfterBackward) {
  Tensor x = ones({1000}).requires_grad_();
  std::weak_ptr<StorageImpl> saved;
  Tensor loss;
  {
    Tensor e = x.exp();  // ExpBackward saves its output
    saved = e.storage();
    loss = e.sum();
  }
  EXPECT_FALSE(saved.expired());  // held by the graph
  loss.backward();
  EXPECT_TRUE(saved.expired());  // released as soon as ExpBackward ran
}

TEST(Autograd, GradientsBecomeReadyInReverseOrderOfUse) {
  // Three "layers" used in order a, b, c: their gradients must arrive c, b, a.
  Tensor a = ones({2}).requires_grad_(), b = ones({2}).requires_grad_(), c = ones({2}).requires_grad_();
  std::vector<char> order;
  a.register_post_accumulate_grad_hook([&](const Tensor&) { order.push_back('a'); });
  b.register_post_accumulate_grad_hook([&](const Tensor&) { order.push_back('b'); });
  c.register_post_accumulate_grad_hook([&](const Tensor&) { order.push_back('c'); });
  Tensor h = (ones({2}) * a).tanh();
  h = (h * b).tanh();
  h = (h * c).tanh();
  h.sum().backward();
  EXPECT_EQ(order, (std::vector<char>{'c', 'b', 'a'}));
}

TEST(Autograd, BackwardErrors) {
  Tensor x = ones({2}).requires_grad_();
  Tensor y = x * 2.0;
  EXPECT_THAT(error_of([&] { y.backward(ones({3})); }),
              HasSubstr("gradient of shape [3] does not match the output shape [2]"));
  EXPECT_THAT(error_of([&] { (x * 2.0).requires_grad_(); }), HasSubstr("only change requires_grad of leaf tensors"));
}
