// tests/accelerate/test_accelerator_cuda.cc (label cuda): the Accelerator on the GPU it picks
// by itself. A tiny BERT trained on CUDA for a few steps must end within 1e-4 relative of the
// same training on the CPU (options.cpu); prepared models and batches live on the device;
// gather, reduce, pad_across_processes and gather_for_metrics work on CUDA tensors (and on CPU
// tensors given to them); save_state writes CPU copies that load_state puts back on the
// device, after which training continues as if never interrupted (also on the CPU); fp16
// steps run through the GradScaler's inf check; ZeRO is refused with a clear error. Without a
// GPU every test skips and says why (ACCEL_CUDA_HARNESS_SELF_TEST=1: see below). One
// process: the NCCL group itself is tested by test_nccl.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "accelerate/accelerator.h"
#include "accelerate/device_choice.h"
#include "core/autograd/grad_mode.h"
#include "core/random.h"
#include "core/safetensors.h"
#include "models/bert.h"
#include "tests/test_util.h"

namespace accel {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::error_of;
using testing::max_relative_difference;
using testing::synthetic_features;
using testing::tiny_config;
namespace fs = std::filesystem;

// ACCEL_CUDA_HARNESS_SELF_TEST=1 (as for test_cuda_ops) runs these tests on a machine without
// a GPU with the CPU standing in for CUDA: the "GPU" run gets options.cpu too, so every
// comparison must hold exactly. It proves the tests themselves sound before a GPU session
// spends its minutes on them. The tests that need a real GPU still skip.
bool harness_self_test() {
  const char* value = std::getenv("ACCEL_CUDA_HARNESS_SELF_TEST");
  return value != nullptr && std::string(value) == "1";
}

#define SKIP_WITHOUT_GPU()                                                                                   \
  do {                                                                                                       \
    if (visible_cuda_devices() == 0) {                                                                       \
      GTEST_SKIP() << "no CUDA device: visible_cuda_devices() found 0 (no GPU, no driver, or "               \
                      "CUDA_VISIBLE_DEVICES hides them); the CUDA tests run on a machine with a GPU";         \
    }                                                                                                        \
  } while (0)

#define SKIP_WITHOUT_GPU_UNLESS_SELF_TEST()       \
  do {                                           \
    if (!harness_self_test()) SKIP_WITHOUT_GPU(); \
  } while (0)

// The device under test: cuda:0, or the CPU in the self-test.
Device device_under_test() { return harness_self_test() ? kCPU : Device(DeviceType::CUDA, 0); }

std::map<std::string, Tensor> cpu_copy(const std::map<std::string, Tensor>& state) {
  std::map<std::string, Tensor> copy;
  for (const auto& [name, tensor] : state) copy[name] = tensor.detach().to(kCPU).clone();
  return copy;
}

struct TrainingRun {
  std::unique_ptr<Accelerator> accelerator;
  std::shared_ptr<models::BertForSequenceClassification> model;
  std::shared_ptr<AcceleratedOptimizer> optimizer;
  std::shared_ptr<PreparedDataLoader> loader;
};

// The same initial weights and batches on either device: the model is built on the CPU from
// one seed and moved by prepare(). SGD with momentum is linear in the gradients, so CPU and
// CUDA differ by rounding only (Adam would amplify the noise of near-zero gradients).
TrainingRun make_run(bool cpu, std::string mixed_precision = "no") {
  TrainingRun run;
  AcceleratorOptions options;
  options.cpu = cpu || harness_self_test();
  options.mixed_precision = std::move(mixed_precision);
  run.accelerator = std::make_unique<Accelerator>(options);
  manual_seed(1234);
  auto model = std::make_shared<models::BertForSequenceClassification>(tiny_config(0.0));
  data::DataLoaderOptions loader_options;
  loader_options.batch_size = 4;
  loader_options.shuffle = true;
  loader_options.seed = 7;
  auto loader = std::make_shared<data::DataLoader>(synthetic_features(24, 99), loader_options);
  auto sgd = std::make_shared<nn::SGD>(model->parameters(), nn::SGDOptions{.lr = 0.05, .momentum = 0.9});
  std::tie(run.model, run.optimizer, run.loader) = run.accelerator->prepare(model, sgd, loader);
  return run;
}

// One epoch (6 steps) with gradient clipping; returns the losses.
std::vector<double> train_epoch(TrainingRun& run) {
  std::vector<double> losses;
  run.model->train();
  for (auto& batch : *run.loader) {
    EXPECT_EQ(batch.input_ids.device(), run.accelerator->device());
    auto autocast = run.accelerator->autocast();
    Tensor loss = run.model->forward(batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.labels).loss;
    losses.push_back(loss.item<double>());
    run.accelerator->backward(loss);
    run.accelerator->clip_grad_norm_(run.model->parameters(), 1.0);
    run.optimizer->step();
    run.optimizer->zero_grad();
  }
  return losses;
}

class AcceleratorCudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("accel_accelerator_cuda_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(AcceleratorCudaTest, PicksTheGpuAndPreparesOntoIt) {
  SKIP_WITHOUT_GPU();
  TrainingRun run = make_run(/*cpu=*/false);
  EXPECT_EQ(run.accelerator->device(), device_under_test());
  EXPECT_EQ(run.accelerator->process_group().backend(), "single");
  for (const auto& [name, p] : run.model->named_parameters()) EXPECT_EQ(p.device(), device_under_test()) << name;
  EXPECT_EQ(make_run(/*cpu=*/true).accelerator->device(), kCPU);
}

TEST_F(AcceleratorCudaTest, TrainsTinyBertLikeTheCpu) {
  SKIP_WITHOUT_GPU_UNLESS_SELF_TEST();
  TrainingRun cpu = make_run(/*cpu=*/true);
  TrainingRun gpu = make_run(/*cpu=*/false);
  const std::vector<double> cpu_losses = train_epoch(cpu);
  const std::vector<double> gpu_losses = train_epoch(gpu);
  ASSERT_EQ(gpu_losses.size(), cpu_losses.size());
  for (size_t i = 0; i < cpu_losses.size(); ++i) {
    EXPECT_NEAR(gpu_losses[i], cpu_losses[i], 1e-4 * std::abs(cpu_losses[i])) << "step " << i;
  }
  const double difference = max_relative_difference(cpu_copy(gpu.model->state_dict()), cpu.model->state_dict());
  EXPECT_LT(difference, 1e-4) << "final weights, CUDA against the CPU";
  // The weights moved: the comparison is not of two untouched copies.
  TrainingRun untouched = make_run(/*cpu=*/true);
  EXPECT_GT(max_relative_difference(*untouched.model, *cpu.model), 1e-3);
}

TEST_F(AcceleratorCudaTest, CollectivesTakeCudaTensors) {
  SKIP_WITHOUT_GPU_UNLESS_SELF_TEST();
  Accelerator accelerator(AcceleratorOptions{.cpu = harness_self_test()});
  ASSERT_EQ(accelerator.device(), device_under_test());
  Tensor x = arange(6, kFloat32).reshape({3, 2}).to(device_under_test());
  Tensor gathered = accelerator.gather(x);
  EXPECT_EQ(gathered.device(), device_under_test());
  EXPECT_TRUE(equal(gathered.to(kCPU), x.to(kCPU)));
  EXPECT_EQ(accelerator.gather(arange(4, kInt64)).device(), kCPU);  // a CPU tensor comes back on the CPU
  EXPECT_TRUE(equal(accelerator.reduce(x, "mean").to(kCPU), x.to(kCPU)));
  EXPECT_EQ(accelerator.pad_across_processes(x, 1, -1).device(), device_under_test());

  auto loader = std::make_shared<data::DataLoader>(synthetic_features(10, 3), data::DataLoaderOptions{.batch_size = 4});
  auto [batches] = accelerator.prepare(loader);
  int64_t seen = 0;
  for (auto& batch : *batches) {
    Tensor labels = accelerator.gather_for_metrics(batch.labels);
    EXPECT_EQ(labels.device(), device_under_test());
    seen += labels.size(0);
  }
  EXPECT_EQ(seen, 10);
}

// save_state after one epoch, then a second epoch; a fresh run that loads the checkpoint and
// trains the second epoch must end where the first did.
TEST_F(AcceleratorCudaTest, SaveStateAndLoadStateRoundTrip) {
  SKIP_WITHOUT_GPU_UNLESS_SELF_TEST();
  TrainingRun first = make_run(/*cpu=*/false);
  train_epoch(first);
  const std::map<std::string, Tensor> at_save = cpu_copy(first.model->state_dict());
  const std::string dir = first.accelerator->save_state((dir_ / "checkpoint").string());
  // What was written is the CPU copy of the CUDA weights.
  std::map<std::string, Tensor> written = safetensors::load((fs::path(dir) / "model.safetensors").string()).tensors;
  for (const auto& [name, tensor] : written) EXPECT_EQ(tensor.device(), kCPU) << name;
  EXPECT_EQ(max_relative_difference(written, at_save), 0.0);
  const std::vector<double> continued = train_epoch(first);

  TrainingRun resumed = make_run(/*cpu=*/false);
  resumed.accelerator->load_state(dir);
  for (const auto& [name, p] : resumed.model->named_parameters()) EXPECT_EQ(p.device(), device_under_test()) << name;
  EXPECT_EQ(max_relative_difference(cpu_copy(resumed.model->state_dict()), at_save), 0.0);
  const std::vector<double> after_resume = train_epoch(resumed);  // the momentum buffers came back to CUDA
  ASSERT_EQ(after_resume.size(), continued.size());
  for (size_t i = 0; i < continued.size(); ++i) {
    EXPECT_NEAR(after_resume[i], continued[i], 1e-5 * std::abs(continued[i])) << "step " << i;
  }
  EXPECT_LT(max_relative_difference(cpu_copy(resumed.model->state_dict()), cpu_copy(first.model->state_dict())), 1e-5);

  // The same checkpoint resumes on the CPU: same files, the state follows the parameters.
  TrainingRun on_cpu = make_run(/*cpu=*/true);
  on_cpu.accelerator->load_state(dir);
  EXPECT_EQ(max_relative_difference(on_cpu.model->state_dict(), at_save), 0.0);
  const std::vector<double> after_cpu_resume = train_epoch(on_cpu);
  for (size_t i = 0; i < continued.size(); ++i) {
    EXPECT_NEAR(after_cpu_resume[i], continued[i], 1e-4 * std::abs(continued[i])) << "step " << i << " on the CPU";
  }
}

TEST_F(AcceleratorCudaTest, Fp16StepsRunThroughTheScaler) {
  SKIP_WITHOUT_GPU_UNLESS_SELF_TEST();
  TrainingRun run = make_run(/*cpu=*/false, "fp16");
  ASSERT_NE(run.accelerator->scaler(), nullptr);
  const std::map<std::string, Tensor> before = cpu_copy(run.model->state_dict());
  const std::vector<double> losses = train_epoch(run);
  for (double loss : losses) EXPECT_TRUE(std::isfinite(loss));
  // The scale only halves (an inf/NaN found on the GPU) from 2^16 within 6 steps (growth needs 2000).
  const double scale = run.accelerator->scaler()->get_scale();
  const double halvings = std::log2(65536.0 / scale);
  EXPECT_TRUE(halvings >= 0 && halvings < 6 && halvings == std::round(halvings)) << "scale " << scale;
  EXPECT_GT(max_relative_difference(cpu_copy(run.model->state_dict()), before), 1e-4) << "no step was taken";
}

TEST_F(AcceleratorCudaTest, ZeroOnCudaIsAClearError) {
  SKIP_WITHOUT_GPU();
  AcceleratorOptions options;
  options.zero_stage = 2;
  EXPECT_THAT(error_of([&] { Accelerator accelerator(options); }),
              AllOf(HasSubstr("ZeRO stage 2 needs the CPU for now"), HasSubstr("found cuda:0"),
                    HasSubstr("ACCEL_USE_CPU=1")));
  options.cpu = true;
  EXPECT_EQ(Accelerator(options).device(), kCPU);
}

}  // namespace
}  // namespace accel
