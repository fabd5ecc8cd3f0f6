// The Accelerator on one process: prepare, gradient accumulation, the fp16 GradScaler's
// rules, exact resume from a mid-epoch checkpoint (bit for bit, fp32), crash safety of
// save_state under kill -9, and the errors for a checkpoint of another model.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <random>
#include <thread>

#include "accelerate/accelerator.h"
#include "accelerate/device_choice.h"
#include "core/autograd/grad_mode.h"
#include "core/random.h"
#include "models/bert.h"
#include "models/pretrained.h"
#include "tests/test_util.h"

using namespace accel;
using accel::testing::synthetic_features;
using accel::testing::tiny_config;
using ::testing::AllOf;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

namespace {

struct TrainingRun {
  std::unique_ptr<Accelerator> accelerator;
  std::shared_ptr<models::BertForSequenceClassification> model;
  std::shared_ptr<AcceleratedOptimizer> optimizer;
  std::shared_ptr<PreparedDataLoader> loader;
  std::shared_ptr<AcceleratedScheduler> scheduler;
};

TrainingRun make_run(const std::string& project_dir, int64_t accumulation = 1, std::string mixed_precision = "no") {
  TrainingRun run;
  AcceleratorOptions options;
  options.seed = 1234;
  options.gradient_accumulation_steps = accumulation;
  options.mixed_precision = mixed_precision;
  options.project_config.project_dir = project_dir;
  run.accelerator = std::make_unique<Accelerator>(options);
  auto model = std::make_shared<models::BertForSequenceClassification>(tiny_config(0.1));
  data::DataLoaderOptions loader_options;
  loader_options.batch_size = 4;
  loader_options.shuffle = true;
  loader_options.seed = 7;
  auto loader = std::make_shared<data::DataLoader>(synthetic_features(26, 99), loader_options);
  auto optimizer = std::make_shared<nn::AdamW>(nn::decay_groups(*model, 1e-3, 0.01), nn::AdamWOptions{.lr = 1e-3});
  auto scheduler = std::make_shared<nn::LRScheduler>(nn::linear_schedule_with_warmup(*optimizer, 3, 14));
  std::tie(run.model, run.optimizer, run.loader, run.scheduler) =
      run.accelerator->prepare(model, optimizer, loader, scheduler);
  return run;
}

// Trains from wherever the run stands until `epochs`; returns every loss. Calls on_step(k)
// after global step k (1-based).
std::vector<float> train(TrainingRun& run, int64_t epochs, const std::function<void(int64_t)>& on_step = nullptr) {
  std::vector<float> losses;
  int64_t step = run.loader->next_epoch() * run.loader->size() + run.loader->skip_pending();
  for (int64_t epoch = run.loader->next_epoch(); epoch < epochs; ++epoch) {
    run.model->train();
    for (auto& batch : *run.loader) {
      auto scope = run.accelerator->accumulate(*run.model);
      Tensor loss = run.model->forward(batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.labels).loss;
      losses.push_back(loss.item<float>());
      run.accelerator->backward(loss);
      run.optimizer->step();
      run.scheduler->step();
      run.optimizer->zero_grad();
      if (on_step) on_step(++step);
    }
  }
  return losses;
}

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

class AcceleratorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("accel_accelerator_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

}  // namespace

TEST_F(AcceleratorTest, PropertiesOnOneProcess) {
  Accelerator accelerator;
  EXPECT_EQ(accelerator.num_processes(), 1);
  EXPECT_EQ(accelerator.process_index(), 0);
  EXPECT_TRUE(accelerator.is_main_process());
  EXPECT_TRUE(accelerator.is_local_main_process());
  EXPECT_EQ(accelerator.device(), visible_cuda_devices() > 0 ? Device(DeviceType::CUDA, 0) : kCPU);
  EXPECT_EQ(accelerator.mixed_precision(), "no");
  EXPECT_TRUE(accelerator.sync_gradients());
  Tensor x = arange(6, kFloat32).reshape({3, 2});
  EXPECT_TRUE(equal(accelerator.gather(x), x));
  EXPECT_TRUE(equal(accelerator.reduce(x, "sum"), x));
  EXPECT_THAT(error_of([] { Accelerator a(AcceleratorOptions{.mixed_precision = "fp8"}); }), HasSubstr("mixed_precision must be no, fp16 or bf16"));
}

// Accelerate's rule (accelerate/device_choice.h), pinned without a GPU: the CPU when asked or
// when no GPU is visible, else the GPU of the local rank, and an error (not a shared GPU) for
// a local rank past the last GPU.
TEST_F(AcceleratorTest, DeviceRuleIsTheLocalRanksGpu) {
  EXPECT_EQ(accelerator_device(/*use_cpu=*/true, /*cuda_devices=*/4, /*local_rank=*/1), kCPU);
  EXPECT_EQ(accelerator_device(false, 0, 3), kCPU);
  EXPECT_EQ(accelerator_device(false, 2, 0), Device(DeviceType::CUDA, 0));
  EXPECT_EQ(accelerator_device(false, 2, 1), Device(DeviceType::CUDA, 1));
  EXPECT_THAT(error_of([] { accelerator_device(false, 2, 2); }),
              AllOf(HasSubstr("local rank 2 needs cuda:2"), HasSubstr("this node shows 2 CUDA device(s)"),
                    HasSubstr("ACCEL_USE_CPU=1")));
  EXPECT_THAT(error_of([] { accelerator_device(false, 2, -1); }), HasSubstr("local rank must be >= 0, got -1"));
}

// What this machine's Accelerators pick: with cpu (option or ACCEL_USE_CPU) or without a GPU,
// the CPU and the group they always had; a group passed in, or named by ACCEL_BACKEND, wins.
TEST_F(AcceleratorTest, CpuOrNoGpuKeepsTheCpuAndItsGroup) {
  Accelerator on_cpu(AcceleratorOptions{.cpu = true});
  EXPECT_EQ(on_cpu.device(), kCPU);
  EXPECT_EQ(on_cpu.process_group().backend(), "single");
  ::setenv("ACCEL_USE_CPU", "1", 1);
  Accelerator launched_with_cpu(AcceleratorOptions::from_env());
  ::unsetenv("ACCEL_USE_CPU");
  EXPECT_EQ(launched_with_cpu.device(), kCPU);

  Accelerator chosen;
  const bool gpu = visible_cuda_devices() > 0;
  EXPECT_EQ(chosen.device(), gpu ? Device(DeviceType::CUDA, 0) : kCPU);
  EXPECT_EQ(chosen.process_group().backend(), "single");  // one process: no NCCL, GPU or not

  std::shared_ptr<distributed::ProcessGroup> group = distributed::make_single_process_group();
  Accelerator given(AcceleratorOptions{}, group);
  EXPECT_EQ(&given.process_group(), group.get());
  EXPECT_EQ(given.device(), gpu ? Device(DeviceType::CUDA, 0) : kCPU);  // single takes CUDA tensors too
  ::setenv("ACCEL_BACKEND", "single", 1);
  Accelerator named(AcceleratorOptions{.cpu = true});
  ::unsetenv("ACCEL_BACKEND");
  EXPECT_EQ(named.process_group().backend(), "single");

  // ZeRO keeps working on the CPU (its CUDA refusal is in test_accelerator_cuda).
  EXPECT_NO_THROW(Accelerator(AcceleratorOptions{.cpu = true, .zero_stage = 1}));
}

TEST_F(AcceleratorTest, OptionsFromLaunchEnvironment) {
  ::setenv("ACCEL_MIXED_PRECISION", "bf16", 1);
  ::setenv("ACCEL_GRADIENT_ACCUMULATION_STEPS", "4", 1);
  AcceleratorOptions options = AcceleratorOptions::from_env();
  ::unsetenv("ACCEL_MIXED_PRECISION");
  ::unsetenv("ACCEL_GRADIENT_ACCUMULATION_STEPS");
  EXPECT_EQ(options.mixed_precision, "bf16");
  EXPECT_EQ(options.gradient_accumulation_steps, 4);
  ::setenv("ACCEL_GRADIENT_ACCUMULATION_STEPS", "four", 1);
  EXPECT_THAT(error_of([] { AcceleratorOptions::from_env(); }), HasSubstr("ACCEL_GRADIENT_ACCUMULATION_STEPS=\"four\""));
  ::unsetenv("ACCEL_GRADIENT_ACCUMULATION_STEPS");
}

TEST_F(AcceleratorTest, GradientAccumulationSyncsEveryKStepsAndAtTheEnd) {
  TrainingRun run = make_run(dir_.string(), 4);
  std::vector<bool> syncs;
  for ([[maybe_unused]] auto& batch : *run.loader) {  // 7 batches
    auto scope = run.accelerator->accumulate(*run.model);
    syncs.push_back(run.accelerator->sync_gradients());
  }
  EXPECT_EQ(syncs, (std::vector<bool>{false, false, false, true, false, false, true}));
}

TEST_F(AcceleratorTest, AccumulatedGradientsEqualOneLargeBatch) {
  // Two micro-batches of 4 with accumulation 2 give the gradient of the mean over all 8.
  manual_seed(5);
  auto model = std::make_shared<models::BertForSequenceClassification>(tiny_config(0.0));
  auto features = synthetic_features(8, 3);
  std::vector<const data::Features*> rows;
  std::vector<int64_t> indices;
  for (int64_t i = 0; i < 8; ++i) {
    // Equal lengths, so padding cannot change the per-example losses.
    rows.push_back(&(*features)[0]);
    indices.push_back(i);
  }
  data::Batch full = data::collate(rows, indices, 0, false);
  full.labels = from_vector<int64_t>({0, 1, 1, 0, 1, 0, 0, 1});
  Accelerator accelerator(AcceleratorOptions{.gradient_accumulation_steps = 2});
  for (int64_t half = 0; half < 2; ++half) {
    auto scope = accelerator.accumulate(*model);
    Tensor loss = model->forward(full.input_ids.narrow(0, 4 * half, 4), full.attention_mask.narrow(0, 4 * half, 4),
                                 full.token_type_ids.narrow(0, 4 * half, 4), full.labels.narrow(0, 4 * half, 4)).loss;
    accelerator.backward(loss);
  }
  std::map<std::string, Tensor> accumulated;
  for (auto& [name, p] : model->named_parameters()) accumulated[name] = p.grad().clone();
  model->zero_grad();
  model->forward(full.input_ids, full.attention_mask, full.token_type_ids, full.labels).loss.backward();
  for (auto& [name, p] : model->named_parameters()) {
    EXPECT_TRUE(allclose(accumulated[name], p.grad(), 1e-5, 1e-7)) << name;
  }
}

TEST_F(AcceleratorTest, ResumeFromMidEpochCheckpointIsBitExact) {
  // 26 examples in batches of 4: 7 batches per epoch; 2 epochs; checkpoint after step 9
  // (the middle of epoch 2), with dropout on so the RNG state matters too.
  TrainingRun uninterrupted = make_run((dir_ / "full").string());
  fs::path checkpoint = dir_ / "mid";
  std::vector<float> expected = train(uninterrupted, 2, [&](int64_t step) {
    if (step == 9) uninterrupted.accelerator->save_state(checkpoint.string());
  });
  ASSERT_EQ(expected.size(), 14u);
  verify_checkpoint(checkpoint.string());

  TrainingRun resumed = make_run((dir_ / "resumed").string());  // fresh weights, fresh optimizer
  resumed.accelerator->load_state(checkpoint.string());
  std::vector<float> tail = train(resumed, 2);
  ASSERT_EQ(tail.size(), 5u);
  for (size_t i = 0; i < tail.size(); ++i) {
    EXPECT_EQ(tail[i], expected[9 + i]) << "step " << 10 + i;  // bit for bit
  }
}

TEST_F(AcceleratorTest, AutomaticCheckpointNamingKeepsTotalLimit) {
  AcceleratorOptions options;
  options.project_config.project_dir = dir_.string();
  options.project_config.automatic_checkpoint_naming = true;
  options.project_config.total_limit = 2;
  Accelerator accelerator(options);
  auto model = std::make_shared<models::BertForSequenceClassification>(tiny_config(0.1));
  auto [prepared] = accelerator.prepare(model);
  for (int i = 0; i < 4; ++i) accelerator.save_state();
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir_ / "checkpoints")) names.push_back(entry.path().filename());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"checkpoint_2", "checkpoint_3"}));
  accelerator.load_state();  // the newest
}

TEST_F(AcceleratorTest, CheckpointOfAnotherModelIsAClearError) {
  TrainingRun run = make_run((dir_ / "a").string());
  std::string saved = run.accelerator->save_state((dir_ / "ckpt").string());
  Accelerator other;
  models::BertConfig bigger = tiny_config(0.1);
  bigger.hidden_size = 48;
  auto model = std::make_shared<models::BertForSequenceClassification>(bigger);
  auto [prepared] = other.prepare(model);
  EXPECT_THAT(error_of([&] { other.load_state(saved); }),
              HasSubstr("the checkpoint's model does not match the prepared model"));
}

TEST_F(AcceleratorTest, CorruptCheckpointIsRejected) {
  TrainingRun run = make_run((dir_ / "a").string());
  std::string saved = run.accelerator->save_state((dir_ / "ckpt").string());
  {
    std::fstream f(fs::path(saved) / "optimizer.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x7f');
  }
  EXPECT_THAT(error_of([&] { run.accelerator->load_state(saved); }), HasSubstr("checksum mismatch for optimizer.safetensors"));
  fs::remove(fs::path(saved) / "accel_checkpoint.json");
  EXPECT_THAT(error_of([&] { run.accelerator->load_state(saved); }), HasSubstr("incomplete checkpoint"));
}

TEST_F(AcceleratorTest, KillDuringSaveStateNeverLosesTheCheckpoint) {
  // A child process saves the same checkpoint name over and over; it is killed with SIGKILL
  // at random moments. Afterwards the name must always hold one complete, verified
  // checkpoint, and a staging dir must never verify as complete.
  TrainingRun run = make_run((dir_ / "a").string());
  fs::path checkpoint = dir_ / "ckpt";
  run.accelerator->save_state(checkpoint.string());
  std::mt19937 rng(42);
  for (int trial = 0; trial < 20; ++trial) {
    pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      for (;;) run.accelerator->save_state(checkpoint.string());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5 + rng() % 60));
    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "trial " << trial;
    EXPECT_NO_THROW(verify_checkpoint(checkpoint.string())) << "trial " << trial;
    fs::path staging = checkpoint;
    staging += ".incomplete";
    if (fs::exists(staging) && !fs::exists(staging / "accel_checkpoint.json")) {
      EXPECT_THROW(verify_checkpoint(staging.string()), Error) << "trial " << trial;
    }
  }
  run.accelerator->load_state(checkpoint.string());
}

TEST_F(AcceleratorTest, GradScalerFollowsPyTorchRules) {
  GradScaler scaler({.init_scale = 1024.0, .growth_interval = 3});
  Tensor w = ones({2}).requires_grad_();
  nn::SGD sgd(std::vector<Tensor>{w}, {.lr = 0.1});
  auto step_with = [&](double grad_value) {
    w.set_grad(full({2}, grad_value * scaler.get_scale()));
    bool stepped = scaler.step(sgd);
    scaler.update();
    return stepped;
  };
  EXPECT_TRUE(step_with(1.0));
  EXPECT_NEAR(w.to_vector<float>()[0], 0.9f, 1e-6);  // the gradient was unscaled first
  EXPECT_FALSE(step_with(INFINITY));                 // skipped...
  EXPECT_EQ(scaler.get_scale(), 512.0);              // ...and backed off
  EXPECT_NEAR(w.to_vector<float>()[0], 0.9f, 1e-6);
  EXPECT_TRUE(step_with(1.0));
  EXPECT_TRUE(step_with(1.0));
  EXPECT_EQ(scaler.get_scale(), 512.0);
  EXPECT_TRUE(step_with(1.0));  // third clean step in a row: grow
  EXPECT_EQ(scaler.get_scale(), 1024.0);
}

// One non-finite element in any gradient skips the step, whichever gradient holds it.
TEST_F(AcceleratorTest, GradScalerFindsInfOrNanInAnyGradient) {
  GradScaler scaler({.init_scale = 4.0});
  Tensor a = ones({3}).requires_grad_(), b = ones({2, 2}).requires_grad_(), unused = ones({1}).requires_grad_();
  nn::SGD sgd(std::vector<Tensor>{a, b, unused}, {.lr = 0.1});
  for (double bad : {INFINITY, -INFINITY, NAN}) {
    for (int holder = 0; holder < 2; ++holder) {
      a.set_grad(full({3}, 4.0));
      b.set_grad(full({2, 2}, 4.0));
      Tensor& target = holder == 0 ? a.mutable_grad() : b.mutable_grad();
      target.view({-1}).narrow(0, 1, 1).fill_(bad);
      EXPECT_FALSE(scaler.step(sgd)) << bad << " in gradient " << holder;
      scaler.update();
    }
  }
  a.set_grad(full({3}, 4.0));
  b.set_grad(full({2, 2}, 4.0));
  EXPECT_TRUE(scaler.step(sgd));  // finite everywhere (the unused parameter has no gradient)
}

TEST_F(AcceleratorTest, Fp16SkippedStepDoesNotStepTheScheduler) {
  TrainingRun run = make_run(dir_.string(), 1, "fp16");
  ASSERT_NE(run.accelerator->scaler(), nullptr);
  EXPECT_EQ(run.accelerator->scaler()->get_scale(), 65536.0);
  auto first = run.loader->begin();
  data::Batch batch = *first;
  auto scope = run.accelerator->accumulate(*run.model);
  Tensor loss;
  {
    auto autocast = run.accelerator->autocast();
    loss = run.model->forward(batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.labels).loss;
  }
  EXPECT_EQ(loss.dtype(), kFloat32);  // losses run in fp32 under autocast
  run.accelerator->backward(loss * INFINITY);
  double lr_before = run.scheduler->get_last_lr()[0];
  run.optimizer->step();
  run.scheduler->step();
  EXPECT_TRUE(run.accelerator->optimizer_step_was_skipped());
  EXPECT_EQ(run.scheduler->get_last_lr()[0], lr_before);
  EXPECT_EQ(run.accelerator->scaler()->get_scale(), 32768.0);
}

TEST_F(AcceleratorTest, SaveModelShardsAboveMaxShardSize) {
  Accelerator accelerator;
  models::BertForSequenceClassification model(tiny_config(0.1));
  accelerator.save_model(model, (dir_ / "sharded").string(), 20000);
  ASSERT_TRUE(fs::exists(dir_ / "sharded" / "model.safetensors.index.json"));
  int shards = 0;
  for (const auto& entry : fs::directory_iterator(dir_ / "sharded")) {
    if (entry.path().extension() != ".safetensors") continue;
    ++shards;
    EXPECT_LE(fs::file_size(entry.path()), 20000u + 4096u) << entry.path();  // data plus header
  }
  EXPECT_GT(shards, 1);
  std::map<std::string, Tensor> loaded = models::load_checkpoint_weights((dir_ / "sharded").string());
  std::map<std::string, Tensor> state = model.state_dict();
  ASSERT_EQ(loaded.size(), state.size());
  for (auto& [name, tensor] : state) EXPECT_TRUE(equal(loaded.at(name), tensor)) << name;
  accelerator.save_model(model, (dir_ / "single").string());
  EXPECT_TRUE(fs::exists(dir_ / "single" / "model.safetensors"));
}
