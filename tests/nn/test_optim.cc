// Optimizers, LR schedules and clip_grad_norm_ against PyTorch and transformers
// (tests/golden/make_optim_goldens.py): SGD plain / momentum with dampening / nesterov with
// weight decay and AdamW trajectories over 8 steps with fixed gradients, in float64, within
// 1e-12 relative; schedule factors over 30 steps; clipping by 2-norm and inf-norm. Also the
// optimizer state dict round trip and Module's state-dict report, and the multi-tensor AdamW
// kernel (the one AdamW::step calls) bit for bit against the per-tensor kernel, directly on
// odd sizes in fp32 and bf16 and through AdamW::step with two groups and lagging step counts.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>

#include "core/autograd/grad_mode.h"
#include "core/kernels.h"
#include "core/parallel.h"
#include "core/random.h"
#include "core/safetensors.h"
#include "nn/layers.h"
#include "nn/optim.h"
#include "nn/schedule.h"
#include "tests/core/tensor_compare.h"

using namespace accel;
using ::testing::HasSubstr;

namespace {

const safetensors::File& golden() {
  static const safetensors::File file = safetensors::load(ACCEL_GOLDEN_DIR "/../optim/optim.safetensors");
  return file;
}
Tensor g(const std::string& name) { return golden().tensors.at(name).clone(); }

// Runs 8 steps of `optimizer` on (w, b) with the stored gradients and compares every step.
void check_trajectory(const std::string& name, const std::function<std::unique_ptr<nn::Optimizer>(std::vector<Tensor>)>& make) {
  Tensor w = g("w0").requires_grad_(), b = g("b0").requires_grad_();
  std::unique_ptr<nn::Optimizer> optimizer = make({w, b});
  for (int i = 0; i < 8; ++i) {
    w.set_grad(g("grad_w." + std::to_string(i)));
    b.set_grad(g("grad_b." + std::to_string(i)));
    optimizer->step();
    EXPECT_TRUE(tensors_close(w, g(name + ".w." + std::to_string(i)), 1e-12, 1e-14)) << name << " step " << i;
    EXPECT_TRUE(tensors_close(b, g(name + ".b." + std::to_string(i)), 1e-12, 1e-14)) << name << " step " << i;
  }
}

}  // namespace

TEST(Optim, SGDMatchesTorch) {
  check_trajectory("sgd_plain", [](std::vector<Tensor> p) { return std::make_unique<nn::SGD>(p, nn::SGDOptions{.lr = 0.1}); });
  check_trajectory("sgd_momentum", [](std::vector<Tensor> p) {
    return std::make_unique<nn::SGD>(p, nn::SGDOptions{.lr = 0.05, .momentum = 0.9, .dampening = 0.1, .weight_decay = 0.01});
  });
  check_trajectory("sgd_nesterov", [](std::vector<Tensor> p) {
    return std::make_unique<nn::SGD>(p, nn::SGDOptions{.lr = 0.05, .momentum = 0.8, .weight_decay = 0.02, .nesterov = true});
  });
}

TEST(Optim, AdamWMatchesTorch) {
  check_trajectory("adamw", [](std::vector<Tensor> p) {
    return std::make_unique<nn::AdamW>(p, nn::AdamWOptions{.lr = 0.01, .beta1 = 0.9, .beta2 = 0.98, .eps = 1e-6,
                                                           .weight_decay = 0.05});
  });
  check_trajectory("adamw_default", [](std::vector<Tensor> p) {
    return std::make_unique<nn::AdamW>(p, nn::AdamWOptions{.lr = 0.003});
  });
}

TEST(Optim, StateDictRoundTripContinuesTheTrajectory) {
  // Four steps, save, a fresh optimizer loads the state, four more steps: equal to torch's 8.
  Tensor w = g("w0").requires_grad_(), b = g("b0").requires_grad_();
  nn::AdamWOptions options{.lr = 0.01, .beta1 = 0.9, .beta2 = 0.98, .eps = 1e-6, .weight_decay = 0.05};
  nn::OptimizerState saved;
  {
    nn::AdamW first({w, b}, options);
    for (int i = 0; i < 4; ++i) {
      w.set_grad(g("grad_w." + std::to_string(i)));
      b.set_grad(g("grad_b." + std::to_string(i)));
      first.step();
    }
    saved = first.state_dict();
  }
  nn::AdamW second({w, b}, options);
  second.load_state_dict(saved);
  for (int i = 4; i < 8; ++i) {
    w.set_grad(g("grad_w." + std::to_string(i)));
    b.set_grad(g("grad_b." + std::to_string(i)));
    second.step();
  }
  EXPECT_TRUE(tensors_close(w, g("adamw.w.7"), 1e-12, 1e-14));
  nn::SGD sgd(std::vector<Tensor>{w, b}, nn::SGDOptions{});
  EXPECT_THAT([&] {
    try {
      sgd.load_state_dict(saved);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  }(), HasSubstr("the checkpoint holds a AdamW optimizer state"));
}

namespace {
// Byte-for-byte equality of two tensors of one dtype and shape.
::testing::AssertionResult bitwise_equal(const Tensor& actual, const Tensor& expected) {
  if (actual.dtype() != expected.dtype() || actual.sizes() != expected.sizes()) {
    return ::testing::AssertionFailure() << "dtype or shape differ: " << actual.dtype() << " " << actual.shape_string()
                                         << " vs " << expected.dtype() << " " << expected.shape_string();
  }
  const Tensor a = actual.contiguous(), e = expected.contiguous();
  // An empty tensor may have no storage (a null data pointer, which memcmp must not get).
  if (a.nbytes() == 0 || std::memcmp(a.data_ptr(), e.data_ptr(), a.nbytes()) == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "not bitwise equal; "
                                       << tensors_close(a.to(kFloat64), e.to(kFloat64), 0, 0).message();
}
}  // namespace

TEST(AdamWMultiTensor, BitwiseEqualToThePerTensorKernel) {
  // Odd sizes put elements in the vector body of one kernel's loop and the scalar tail of the
  // other's; thread counts move the boundaries of the parallel split.
  const std::vector<int64_t> sizes = {1, 7, 65537, 3, 16384 * 3 + 5, 0, 100003, 2, 65536};
  const int threads_before = get_num_threads();
  for (DType dtype : {kFloat32, kBFloat16}) {
    for (int threads : {1, 3}) {
      set_num_threads(threads);
      Generator gen(17);
      std::vector<kernels::AdamWTensors> multi, single;
      for (int64_t n : sizes) {
        Tensor p = randn({n}, kFloat32, &gen).to(dtype), grad = randn({n}, kFloat32, &gen).to(dtype);
        Tensor m = (randn({n}, kFloat32, &gen) * 0.1).to(dtype), v = (randn({n}, kFloat32, &gen).abs() * 0.01).to(dtype);
        multi.push_back({p, grad, m, v});
        single.push_back({p.clone(), grad, m.clone(), v.clone()});
      }
      for (int64_t step = 1; step <= 3; ++step) {
        const kernels::AdamWHyper hyper{1e-3, 0.9, 0.999, 1e-8, 0.01, step};
        kernels::adamw_multi_tensor(kCPU, multi, hyper);
        for (const kernels::AdamWTensors& t : single) kernels::adamw(kCPU, t.param, t.grad, t.exp_avg, t.exp_avg_sq, hyper);
      }
      for (size_t i = 0; i < sizes.size(); ++i) {
        const std::string what = std::string(dtype_name(dtype)) + ", " + std::to_string(threads) + " threads, tensor " +
                                 std::to_string(i) + " of " + std::to_string(sizes[i]) + " elements";
        EXPECT_TRUE(bitwise_equal(multi[i].param, single[i].param)) << what << ": param";
        EXPECT_TRUE(bitwise_equal(multi[i].exp_avg, single[i].exp_avg)) << what << ": exp_avg";
        EXPECT_TRUE(bitwise_equal(multi[i].exp_avg_sq, single[i].exp_avg_sq)) << what << ": exp_avg_sq";
      }
    }
  }
  set_num_threads(threads_before);
}

TEST(AdamWMultiTensor, StepBatchesByGroupAndStepCountAndKeepsThePerTensorResult) {
  // Two groups with their own lr and weight decay; parameter 1 has no gradient on step 2, so
  // from then on its step count lags the others' and it takes a batch of its own.
  Generator gen(18);
  std::vector<Tensor> params;
  for (const Shape& shape : std::vector<Shape>{{5, 3}, {7}, {65537}, {2, 2}}) params.push_back(randn(shape, kFloat32, &gen));
  std::vector<Tensor> leaves;
  for (const Tensor& p : params) leaves.push_back(p.clone().requires_grad_());
  nn::AdamW optimizer({nn::ParamGroup{{leaves[0], leaves[1]}, 0.01, 0.1}, nn::ParamGroup{{leaves[2], leaves[3]}, 0.003, 0.0}},
                      nn::AdamWOptions{.beta1 = 0.8, .beta2 = 0.95, .eps = 1e-7});
  std::vector<Tensor> m, v;
  for (const Tensor& p : params) {
    m.push_back(zeros_like(p));
    v.push_back(zeros_like(p));
  }
  std::vector<int64_t> steps(params.size(), 0);
  const double lrs[] = {0.01, 0.01, 0.003, 0.003}, decays[] = {0.1, 0.1, 0.0, 0.0};
  for (int step = 0; step < 4; ++step) {
    for (size_t i = 0; i < params.size(); ++i) {
      const bool has_grad = !(i == 1 && step == 1);
      leaves[i].set_grad(has_grad ? randn(params[i].sizes(), kFloat32, &gen) : Tensor());
      if (!has_grad) continue;
      ++steps[i];
      kernels::adamw(kCPU, params[i], leaves[i].grad(), m[i], v[i],
                     kernels::AdamWHyper{lrs[i], 0.8, 0.95, 1e-7, decays[i], steps[i]});
    }
    optimizer.step();
  }
  const nn::OptimizerState state = optimizer.state_dict();
  for (size_t i = 0; i < params.size(); ++i) {
    const std::string key = "state." + std::to_string(i) + ".";
    EXPECT_TRUE(bitwise_equal(leaves[i].detach(), params[i])) << "parameter " << i;
    EXPECT_TRUE(bitwise_equal(state.tensors.at(key + "exp_avg"), m[i])) << "exp_avg of parameter " << i;
    EXPECT_TRUE(bitwise_equal(state.tensors.at(key + "exp_avg_sq"), v[i])) << "exp_avg_sq of parameter " << i;
    EXPECT_EQ(state.meta.at("steps").at(std::to_string(i)).get<int64_t>(), steps[i]) << "parameter " << i;
  }
  EXPECT_EQ(steps[1], 3);
}

TEST(Optim, SchedulesMatchTransformers) {
  for (const std::string name : {"linear", "cosine", "constant"}) {
    Tensor p = zeros({1}).requires_grad_();
    nn::SGD sgd(std::vector<Tensor>{p}, nn::SGDOptions{.lr = 1.0});
    nn::LRScheduler scheduler = name == "linear"   ? nn::linear_schedule_with_warmup(sgd, 5, 25)
                                : name == "cosine" ? nn::cosine_schedule_with_warmup(sgd, 5, 25)
                                                   : nn::constant_schedule_with_warmup(sgd, 5);
    std::vector<double> expected = g("schedule." + name).to_vector<double>();
    for (size_t step = 0; step < expected.size(); ++step) {
      EXPECT_NEAR(scheduler.get_last_lr()[0], expected[step], 1e-12) << name << " step " << step;
      scheduler.step();
    }
  }
}

TEST(Optim, ClipGradNormMatchesTorch) {
  for (const std::string key : {"clip.l2", "clip.inf"}) {
    Tensor w = zeros({3, 4}, kFloat64).requires_grad_(), b = zeros({4}, kFloat64).requires_grad_();
    w.set_grad(g("grad_w.0") * 3.0);
    b.set_grad(g("grad_b.0") * 3.0);
    double total = nn::clip_grad_norm_({w, b}, 1.5, key == "clip.l2" ? 2.0 : INFINITY);
    EXPECT_NEAR(total, g(key + ".total").item<double>(), 1e-12) << key;
    EXPECT_TRUE(tensors_close(w.grad(), g(key + ".w"), 1e-12, 1e-14)) << key;
    EXPECT_TRUE(tensors_close(b.grad(), g(key + ".b"), 1e-12, 1e-14)) << key;
  }
}

TEST(Module, StateDictReportAndStrictLoading) {
  nn::Linear layer(4, 3);
  std::map<std::string, Tensor> state = layer.state_dict();
  EXPECT_EQ(state.size(), 2u);
  nn::Linear other(4, 3);
  EXPECT_TRUE(other.load_state_dict(state).ok());
  EXPECT_TRUE(equal(other.weight, layer.weight));
  state["extra"] = zeros({1});
  state.erase("bias");
  state["weight"] = zeros({3, 5});
  nn::LoadReport report = other.load_state_dict(state, /*strict=*/false);
  EXPECT_EQ(report.missing_keys, std::vector<std::string>{"bias"});
  EXPECT_EQ(report.unexpected_keys, std::vector<std::string>{"extra"});
  ASSERT_EQ(report.shape_mismatches.size(), 1u);
  EXPECT_THAT(report.shape_mismatches[0], HasSubstr("weight: checkpoint [3, 5] vs model [3, 4]"));
  try {
    other.load_state_dict(state);
    ADD_FAILURE() << "strict load accepted a bad state dict";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("missing keys (1):\n    bias"));
    EXPECT_THAT(e.what(), HasSubstr("unexpected keys (1):\n    extra"));
  }
}

TEST(Module, ToDtypeKeepsParameterHandlesAndTrainEvalRecurses) {
  nn::Linear layer(4, 3);
  Tensor handle = layer.weight;
  layer.to(kFloat64);
  EXPECT_EQ(handle.dtype(), kFloat64);  // the layer's own handle sees the new data
  EXPECT_TRUE(handle.requires_grad());
  layer.eval();
  EXPECT_FALSE(layer.is_training());
  EXPECT_EQ(layer.num_parameters(), 15);
}
