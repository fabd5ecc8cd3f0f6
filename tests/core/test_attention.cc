// tests/core/test_attention.cc: the fused CPU attention kernel (scaled_dot_product_attention
// with fused = true) against the composition of matmul, mul, add, softmax, dropout and matmul
// run in float64 on the same inputs: outputs and the gradients of q, k and v, with and without
// masks (key padding, a full (B, 1, Tq, Tk) mask, a fully masked row), with Tq != Tk, with
// strided inputs, and with dropout, which must draw exactly the composition's mask from the
// same generator state. Also: the result's layout makes merging heads a view, autocast runs
// the fused kernel in fp32 on the bf16 inputs (gradients back in bf16), masks that require grad
// take the composition, and bad shapes and dtypes are clear errors. And
// nn::MultiHeadSelfAttention, which stacks the three projections into one GEMM (inference keeps
// the stacked weights while they are unchanged) and, in training, runs packed_self_attention on
// its output (gradients as the separate projections', fp32 and bf16).
#include <gtest/gtest.h>

#include <limits>
#include <optional>

#include "core/autocast.h"
#include "core/kernels.h"
#include "core/ops.h"
#include "core/autograd/grad_mode.h"
#include "core/random.h"
#include "nn/attention.h"
#include "tests/core/tensor_compare.h"
#include "tests/test_util.h"

namespace accel {
namespace {

using testing::contains;
using testing::error_of;

struct Inputs {
  Tensor q, k, v, mask;
};

// q (B, H, Tq, D), k and v (B, H, Tk, D) as split-head views of (B, T, H*D) projections, the
// layout MultiHeadSelfAttention passes; mask_kind 0: none, 1: key padding (B, 1, 1, Tk),
// 2: a full (B, 1, Tq, Tk) additive mask with one row masked everywhere.
Inputs make_inputs(int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t D, int mask_kind) {
  auto heads = [&](int64_t T) { return randn({B, T, H * D}).view({B, T, H, D}).transpose(1, 2); };
  Inputs in{heads(Tq), heads(Tk), heads(Tk), Tensor()};
  const float lowest = std::numeric_limits<float>::lowest();
  if (mask_kind == 1) {
    Tensor keep = ones({B, Tk});
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t j = Tk - b; j < Tk; ++j) keep.select(0, b).select(0, j).fill_(0.0);  // sequence b has b pads
    }
    in.mask = ((1.0 - keep) * lowest).view({B, 1, 1, Tk});
  } else if (mask_kind == 2) {
    in.mask = randn({B, 1, Tq, Tk});
    in.mask.select(0, 0).select(0, 0).select(0, 1).fill_(lowest);  // query 1 of batch 0 sees nothing
  }
  return in;
}

struct Result {
  Tensor out, grad_q, grad_k, grad_v;
};

// Runs attention on leaf copies of the inputs (in `dtype`) and backpropagates sum(out * weight).
Result run(const Inputs& in, DType dtype, bool fused, double dropout_p, bool training, uint64_t seed) {
  Tensor q = in.q.to(dtype).detach().requires_grad_(), k = in.k.to(dtype).detach().requires_grad_();
  Tensor v = in.v.to(dtype).detach().requires_grad_();
  Tensor mask = in.mask.defined() ? in.mask.to(dtype) : Tensor();
  Generator generator(seed);
  Tensor out = scaled_dot_product_attention(q, k, v, mask, dropout_p, training, std::nullopt, fused, &generator);
  Generator weights(seed + 1);
  Tensor weight = randn(out.sizes(), {}, &weights).to(dtype);
  (out * weight).sum().backward();
  return {out.detach(), q.grad(), k.grad(), v.grad()};
}

void expect_fused_matches_float64_composition(const Inputs& in, double dropout_p, const std::string& what) {
  const uint64_t seed = 1234;
  Result fused = run(in, kFloat32, true, dropout_p, true, seed);
  Result reference = run(in, kFloat64, false, dropout_p, true, seed);
  EXPECT_TRUE(tensors_close(fused.out, reference.out, 1e-5, 1e-6)) << what << ": output";
  EXPECT_TRUE(tensors_close(fused.grad_q, reference.grad_q, 1e-5, 1e-6)) << what << ": grad q";
  EXPECT_TRUE(tensors_close(fused.grad_k, reference.grad_k, 1e-5, 1e-6)) << what << ": grad k";
  EXPECT_TRUE(tensors_close(fused.grad_v, reference.grad_v, 1e-5, 1e-6)) << what << ": grad v";
}

TEST(FusedAttention, MatchesTheFloat64CompositionWithoutMask) {
  manual_seed(1);
  expect_fused_matches_float64_composition(make_inputs(2, 3, 5, 5, 4, 0), 0.0, "no mask");
}

TEST(FusedAttention, MatchesTheFloat64CompositionWithKeyPaddingMask) {
  manual_seed(2);
  expect_fused_matches_float64_composition(make_inputs(3, 2, 6, 6, 8, 1), 0.0, "key padding");
}

TEST(FusedAttention, MatchesTheFloat64CompositionWithFullMaskAndMoreKeysThanQueries) {
  manual_seed(3);
  expect_fused_matches_float64_composition(make_inputs(2, 2, 3, 7, 5, 2), 0.0, "full mask, Tq 3, Tk 7");
}

TEST(FusedAttention, SkipsPaddedKeysButNotAFullyPaddedSequence) {
  manual_seed(10);
  Inputs in = make_inputs(3, 2, 6, 6, 4, 1);  // sequences with 0, 1 and 2 padded keys: those are skipped
  in.mask.select(0, 0).fill_(std::numeric_limits<float>::lowest());  // sequence 0 all padding: uniform, as torch
  expect_fused_matches_float64_composition(in, 0.0, "padded keys, one sequence all padding");
  expect_fused_matches_float64_composition(in, 0.25, "the same with dropout");
}

TEST(FusedAttention, DropoutDrawsTheCompositionsMask) {
  manual_seed(4);
  Inputs in = make_inputs(2, 3, 9, 9, 4, 1);  // 2*3*9*9 = 486 draws: not a multiple of 4 per row
  expect_fused_matches_float64_composition(in, 0.3, "dropout 0.3");
  // And the draw really is used: another generator seed gives another output.
  Result a = run(in, kFloat32, true, 0.3, true, 1), b = run(in, kFloat32, true, 0.3, true, 2);
  EXPECT_GT((a.out - b.out).abs().max().item<double>(), 1e-3);
  // Not training: no dropout at all, and no draw from the generator.
  Generator generator(7);
  scaled_dot_product_attention(in.q, in.k, in.v, in.mask, 0.3, false, std::nullopt, true, &generator);
  EXPECT_EQ(generator.offset(), 0u);
}

TEST(FusedAttention, AdvancesTheGeneratorAsTheComposition) {
  manual_seed(5);
  Inputs in = make_inputs(1, 2, 3, 5, 4, 0);
  Generator fused(9), composed(9);
  scaled_dot_product_attention(in.q, in.k, in.v, Tensor(), 0.1, true, std::nullopt, true, &fused);
  scaled_dot_product_attention(in.q, in.k, in.v, Tensor(), 0.1, true, std::nullopt, false, &composed);
  EXPECT_EQ(fused.offset(), composed.offset());
  EXPECT_GT(fused.offset(), 0u);
}

TEST(FusedAttention, TakesInputsWithoutUnitStrideOnTheHeadDim) {
  manual_seed(6);
  Inputs in = make_inputs(2, 2, 4, 4, 3, 1);
  in.q = in.q.transpose(2, 3).contiguous().transpose(2, 3);  // same values, head-dim stride Tq
  ASSERT_NE(in.q.stride(3), 1);
  expect_fused_matches_float64_composition(in, 0.0, "strided q");
}

TEST(FusedAttention, ResultMergesHeadsWithoutACopy) {
  manual_seed(7);
  Inputs in = make_inputs(2, 3, 4, 4, 5, 0);
  Tensor out = scaled_dot_product_attention(in.q, in.k, in.v);
  EXPECT_EQ(out.sizes(), (Shape{2, 3, 4, 5}));
  EXPECT_TRUE(out.transpose(1, 2).is_contiguous());  // (B, Tq, H, D): reshape to (B, Tq, H*D) is a view
}

// Under autocast the kernel reads the bf16 heads as they are and computes in fp32: bit for bit
// the fp32 kernel on their exact fp32 values, gradients rounded once into bf16.
TEST(FusedAttention, AutocastRunsTheFusedKernelInFp32OnBf16Inputs) {
  manual_seed(8);
  Inputs in = make_inputs(2, 2, 5, 6, 8, 1);
  auto leaves = [&](DType dtype) {
    return std::vector<Tensor>{in.q.to(kBFloat16).to(dtype).detach().requires_grad_(),
                               in.k.to(kBFloat16).to(dtype).detach().requires_grad_(),
                               in.v.to(kBFloat16).to(dtype).detach().requires_grad_()};
  };
  Tensor weight = randn({2, 2, 5, 8});
  std::vector<Tensor> bf16 = leaves(kBFloat16), fp32 = leaves(kFloat32);
  Generator autocast_generator(3), reference_generator(3);
  Tensor out;
  {
    AutocastGuard guard(kBFloat16);
    out = scaled_dot_product_attention(bf16[0], bf16[1], bf16[2], in.mask, 0.25, true, std::nullopt, true,
                                       &autocast_generator);
    (out * weight).sum().backward();
  }
  // The same fused kernel, dropout stream included, on the inputs' exact fp32 values.
  Tensor reference = scaled_dot_product_attention(fp32[0], fp32[1], fp32[2], in.mask, 0.25, true, std::nullopt,
                                                  true, &reference_generator);
  (reference * weight).sum().backward();
  EXPECT_EQ(out.dtype(), kFloat32);  // fp32 attention, not the composition's 16-bit probs @ v
  EXPECT_TRUE(tensors_close(out, reference, 0.0, 0.0));
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(bf16[i].grad().dtype(), kBFloat16);
    EXPECT_TRUE(tensors_close(bf16[i].grad().to(kFloat32), fp32[i].grad().to(kBFloat16).to(kFloat32), 0.0, 0.0))
        << "input " << i;
  }
}

TEST(FusedAttention, MasksThatRequireGradTakeTheComposition) {
  manual_seed(8);
  Inputs in = make_inputs(1, 2, 4, 4, 8, 2);
  Tensor mask = in.mask.detach().requires_grad_();
  Tensor q = in.q.detach().requires_grad_();
  scaled_dot_product_attention(q, in.k, in.v, mask).sum().backward();
  ASSERT_TRUE(mask.grad().defined());
  EXPECT_GT(mask.grad().abs().max().item<double>(), 0.0);
}

TEST(FusedAttention, BadShapesAreClearErrors) {
  Tensor q = randn({2, 3, 4, 5});
  std::string error = error_of([&] { scaled_dot_product_attention(q, randn({2, 3, 4, 6}), randn({2, 3, 4, 6})); });
  EXPECT_TRUE(contains(error, "expected q (B, heads, Tq, head_dim) and k, v (B, heads, Tk, head_dim)")) << error;
  error = error_of([&] { scaled_dot_product_attention(q, q, q, Tensor(), 1.5, true); });
  EXPECT_TRUE(contains(error, "dropout probability must be in [0, 1], got 1.5")) << error;
}

TEST(FusedAttention, KernelSlotRejectsWrongDtypesClearly) {
  // 16-bit q, k and v are read as they are, but all of one dtype, and the output is float32; a
  // direct caller of the slot gets told so.
  Tensor q = randn({1, 2, 3, 4}).to(kBFloat16);
  Tensor out16 = Tensor::empty({1, 2, 3, 4}, kBFloat16), out = Tensor::empty({1, 2, 3, 4});
  std::string error =
      error_of([&] { kernels::attention(q.device(), q, q, q, Tensor(), 0.5, 0.0, 0, 0, out16, Tensor()); });
  EXPECT_TRUE(contains(error, "attention: the fused kernel takes its mask, output, probabilities and output gradient "
                              "in float32, got bfloat16 on cpu")) << error;
  Tensor k = q.to(kFloat32);
  error = error_of([&] { kernels::attention(q.device(), q, k, q, Tensor(), 0.5, 0.0, 0, 0, out, Tensor()); });
  EXPECT_TRUE(contains(error, "takes q, k, v and their gradients in one of float32, bfloat16 and float16, got "
                              "float32 beside bfloat16")) << error;
}

class CountingHooks : public nn::ForwardHooks {
 public:
  void before_forward(const nn::Module&) override { ++calls; }
  void after_forward(const nn::Module&, const Tensor&) override {}
  int calls = 0;
};

// Random weights and biases (so a mixed-up bias or head order shows) and a key-padding mask.
struct AttentionCase {
  nn::MultiHeadSelfAttention attention{64, 4, 0.25};
  Tensor x, mask;
  AttentionCase() {
    manual_seed(31);
    for (Tensor& p : attention.parameters()) {
      NoGradGuard no_grad;
      p.copy_(randn(p.sizes()) * 0.2);
    }
    x = randn({2, 5, 64});
    Tensor keep = ones({2, 5});
    keep.select(0, 1).narrow(0, 3, 2).fill_(0.0);
    mask = nn::additive_attention_mask(keep, kFloat32);
  }
};

TEST(MultiHeadSelfAttention, InferenceStacksTheProjectionsIntoOneGemm) {
  AttentionCase c;
  c.attention.eval();
  Tensor stacked;
  {
    NoGradGuard no_grad;
    ASSERT_TRUE(c.attention.fuses_projections(c.x));
    stacked = c.attention.forward(c.x, c.mask);
  }
  c.attention.to(kFloat64);
  ASSERT_FALSE(c.attention.fuses_projections(c.x.to(kFloat64)));  // recording float64: three GEMMs
  Tensor reference = c.attention.forward(c.x.to(kFloat64), c.mask.to(kFloat64)).detach();  // (2, 5, 64)
  EXPECT_TRUE(tensors_close(stacked.to(kFloat64), reference, 1e-5, 1e-5));

  // Hooks on a projection (ZeRO-3 gathers the weights in them) keep the separate GEMMs.
  auto hooks = std::make_shared<CountingHooks>();
  c.attention.key->set_forward_hooks(hooks);
  NoGradGuard no_grad;
  EXPECT_FALSE(c.attention.fuses_projections(c.x));
  c.attention.forward(c.x.to(kFloat64), c.mask.to(kFloat64));
  EXPECT_EQ(hooks->calls, 1);
}

// Inference keeps the stacked weights between forwards (in fp32, and in bf16 under autocast)
// and stacks them again once a projection's weight changes in place or moves (set_data): every
// no-grad forward equals a recording forward, which stacks afresh, on the weights as they are.
TEST(MultiHeadSelfAttention, InferenceKeepsTheStackedWeightsWhileTheyAreUnchanged) {
  AttentionCase c;
  c.attention.eval();
  for (bool bf16 : {false, true}) {
    auto forward = [&](bool records) {
      std::optional<NoGradGuard> no_grad;
      if (!records) no_grad.emplace();
      AutocastGuard autocast(kBFloat16, bf16);
      return c.attention.forward(c.x, c.mask).detach();
    };
    Tensor before = forward(false);
    EXPECT_TRUE(tensors_close(forward(false), before, 0, 0));
    EXPECT_TRUE(tensors_close(forward(true), before, 0, 0));
    {
      NoGradGuard no_grad;
      c.attention.value->weight.mul_(2.0);
      c.attention.key->bias.add_(ones({64}));
    }
    Tensor changed = forward(false);
    EXPECT_FALSE(tensors_close(changed, before, 1e-2, 1e-2)) << "bf16 " << bf16;
    EXPECT_TRUE(tensors_close(changed, forward(true), 0, 0)) << "bf16 " << bf16;
    c.attention.query->weight.set_data(randn({64, 64}));
    EXPECT_TRUE(tensors_close(forward(false), forward(true), 0, 0)) << "bf16 " << bf16;
  }
  c.attention.to(kFloat64);
  NoGradGuard no_grad;
  EXPECT_EQ(c.attention.forward(c.x.to(kFloat64), c.mask.to(kFloat64)).dtype(), kFloat64);
}

// Training stacks them too: the packed attention's backward writes the query, key and value
// gradients into one tensor, so the input's gradient is one GEMM. Output and every gradient
// match the three separate projections run in float64 on the same dropout draw (the attention
// dropout mask comes from the generator at the same point either way).
TEST(MultiHeadSelfAttention, TrainingStacksTheProjectionsWithTheSeparateGradients) {
  AttentionCase c;
  c.attention.train();
  Tensor x = c.x.clone().requires_grad_(true);
  ASSERT_TRUE(c.attention.fuses_projections(x));
  manual_seed(77);
  Tensor out = c.attention.forward(x, c.mask);  // (2, 5, 64)
  Tensor g = randn(out.sizes());
  out.backward(g);
  std::vector<Tensor> grads;
  for (const Tensor& p : c.attention.parameters()) grads.push_back(p.grad().clone());

  c.attention.zero_grad();
  c.attention.to(kFloat64);
  Tensor xd = c.x.to(kFloat64).requires_grad_(true);
  ASSERT_FALSE(c.attention.fuses_projections(xd));
  manual_seed(77);
  Tensor reference = c.attention.forward(xd, c.mask.to(kFloat64));
  reference.backward(g.to(kFloat64));
  EXPECT_TRUE(tensors_close(out, reference, 1e-5, 1e-5));
  EXPECT_TRUE(tensors_close(x.grad(), xd.grad(), 1e-5, 1e-5));
  const std::vector<Tensor> params = c.attention.parameters();
  ASSERT_EQ(params.size(), grads.size());
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_TRUE(tensors_close(grads[i], params[i].grad(), 1e-5, 1e-5)) << "parameter " << i;
  }
}

// Under bf16 autocast the stacked projection is one bf16 GEMM, cast to fp32 once for the fused
// attention, and gradients come back in the parameters' fp32. Against float64 it is as accurate
// as the three separate bf16 projections (hooks on one of them keep those): its input gradient
// is one GEMM accumulated in fp32 where the separate path sums three bf16-rounded products.
TEST(MultiHeadSelfAttention, TrainingStacksTheProjectionsUnderAutocast) {
  AttentionCase c;
  c.attention.eval();  // no dropout, so the runs below draw nothing
  struct Run {
    Tensor out, x_grad, weight_grad;
  };
  auto run = [&](bool stacked) {
    c.attention.zero_grad();
    c.attention.key->set_forward_hooks(stacked ? nullptr : std::make_shared<CountingHooks>());
    Run r;
    Tensor x = c.x.clone().requires_grad_(true);
    {
      AutocastGuard autocast(kBFloat16);
      EXPECT_EQ(c.attention.fuses_projections(x), stacked);
      r.out = c.attention.forward(x, c.mask);
    }
    EXPECT_EQ(r.out.dtype(), kFloat32);
    r.out.backward(c.x);  // any fixed output gradient
    r.x_grad = x.grad();
    r.weight_grad = c.attention.value->weight.grad().clone();
    return r;
  };
  const Run stacked = run(true), separate = run(false);
  c.attention.key->set_forward_hooks(nullptr);
  c.attention.zero_grad();
  c.attention.to(kFloat64);
  Tensor xd = c.x.to(kFloat64).requires_grad_(true);
  Tensor reference = c.attention.forward(xd, c.mask.to(kFloat64));
  reference.backward(c.x.to(kFloat64));
  auto max_error = [](const Tensor& a, const Tensor& b) { return (a.to(kFloat64) - b).abs().max().item<double>(); };
  const double scale = reference.abs().max().item<double>();
  EXPECT_LT(max_error(stacked.out, reference), 2e-2 * scale);
  EXPECT_LE(max_error(stacked.out, reference), 1.25 * max_error(separate.out, reference) + 1e-6);
  EXPECT_LE(max_error(stacked.x_grad, xd.grad()), 1.25 * max_error(separate.x_grad, xd.grad()) + 1e-6);
  EXPECT_LE(max_error(stacked.weight_grad, c.attention.value->weight.grad()),
            1.25 * max_error(separate.weight_grad, c.attention.value->weight.grad()) + 1e-6);
}

TEST(PackedSelfAttention, BadShapesAreClearErrors) {
  std::string error = error_of([] { packed_self_attention(randn({2, 5, 64}), 5); });
  EXPECT_TRUE(contains(error, "expected qkv (batch, seq, 3 * heads * head_dim) with 5 heads, got shape [2, 5, 64]"))
      << error;
}

}  // namespace
}  // namespace accel
