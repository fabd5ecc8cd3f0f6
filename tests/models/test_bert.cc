// tests/models/test_bert.cc: accel's BERT against transformers. The golden files
// (tests/golden/bert/, made by tests/golden/make_bert_goldens.py) hold three tiny random
// models as transformers saved them and what transformers computed on a padded sentence-pair
// batch: hidden states, pooler output, logits, loss, the gradient of every parameter, and
// the losses of ten AdamW steps. The rest checks the save_pretrained round trip, gradient
// checkpointing, the shared tiny-bert fixture, and that every loading error says what went
// wrong.
//
// Tolerance: 1e-4 relative plus 1e-6 absolute. accel and PyTorch run the same float32 math
// but sum in different orders (GEMM blocking, reductions, softmax), so values differ by a few
// ulps per op, amplified through two layers and the backward pass to ~1e-6 relative. The
// absolute term covers entries whose exact value is near zero (a gradient that is a sum of
// cancelling terms): their rounding error is relative to the size of the terms, not of the
// result (the key biases' exact gradient is 0: softmax ignores q . bias). 1e-6 is under a
// thousandth of the median gradient entry (~2e-3). Observed: at most 6e-5 relative error on
// the classifiers' entries above 1e-4, every other entry within the atol; computing GELU in
// its tanh form instead of erf already fails.
//
// Set ACCEL_KEEP_SAVED_BERT_DIR=<dir> to have SavePretrainedRoundTrip also write the tiny
// classifier there, for tests/golden/check_save_pretrained.py to load with transformers.
#include "models/pretrained.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/autocast.h"
#include "core/autograd/grad_mode.h"
#include "core/error.h"
#include "core/random.h"
#include "core/safetensors.h"
#include "nn/init.h"
#include "nn/layers.h"
#include "nn/optim.h"
#include "tests/core/tensor_compare.h"

namespace accel::models {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const std::string kGoldenDir = std::string(ACCEL_GOLDEN_DIR) + "/../bert";
const std::string kTinyDir = kGoldenDir + "/tiny";
const std::string kGeluNewDir = kGoldenDir + "/tiny_gelu_new";
const std::string kRegressionDir = kGoldenDir + "/tiny_regression";
const std::string kSharedTinyBert = std::string(ACCEL_SHARED_DATA_DIR) + "/tiny-bert";
constexpr double kRtol = 1e-4, kAtol = 1e-6;

using Golden = std::map<std::string, Tensor>;

Golden load_golden(const std::string& case_name) {
  return safetensors::load(kGoldenDir + "/" + case_name + "_golden.safetensors").tensors;
}

const Tensor& at(const Golden& golden, const std::string& name) {
  auto it = golden.find(name);
  if (it == golden.end()) throw Error("golden file has no tensor \"" + name + "\"");
  return it->second;
}

PretrainedOptions quiet() {
  PretrainedOptions options;
  options.verbose = false;
  return options;
}

// Every parameter's gradient against the golden grad.<name>, and no golden gradient left over.
void expect_gradients_match(const nn::Module& model, const Golden& golden) {
  std::set<std::string> expected;
  for (auto& [name, tensor] : golden) {
    if (name.rfind("grad.", 0) == 0) expected.insert(name.substr(5));
  }
  std::set<std::string> seen;
  for (auto& [name, param] : model.named_parameters()) {
    seen.insert(name);
    ASSERT_TRUE(expected.count(name)) << "transformers has no parameter " << name;
    ASSERT_TRUE(param.grad().defined()) << name << " got no gradient";
    EXPECT_TRUE(tensors_close(param.grad(), at(golden, "grad." + name), kRtol, kAtol)) << "gradient of " << name;
  }
  EXPECT_EQ(seen, expected) << "accel and transformers have different parameter sets";
}

// A fresh directory under the system temp dir, removed with the object.
struct TempDir {
  fs::path path;
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path = fs::temp_directory_path() /
           ("accel_test_bert_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string str() const { return path.string(); }
};

// A copy of the tiny classifier directory whose config.json `edit` may change.
std::string copy_tiny(const TempDir& temp, const std::function<void(nlohmann::json&)>& edit) {
  fs::path dir = temp.path / "model";
  fs::create_directories(dir);
  fs::copy_file(fs::path(kTinyDir) / "model.safetensors", dir / "model.safetensors");
  nlohmann::json config = nlohmann::json::parse(std::ifstream(fs::path(kTinyDir) / "config.json"));
  edit(config);
  std::ofstream(dir / "config.json") << config.dump(2);
  return dir.string();
}

TEST(BertGolden, ClassifierForwardLossAndGradientsMatchTransformers) {
  Golden golden = load_golden("tiny");
  auto model = bert_classifier_from_pretrained(kTinyDir, quiet());
  EXPECT_EQ(model->config.num_labels, 3);
  EXPECT_EQ(model->config.intermediate_size, 37);
  const Tensor &ids = at(golden, "input_ids"), &mask = at(golden, "attention_mask"),
               &types = at(golden, "token_type_ids");

  BertOutput encoded = model->bert->forward(ids, mask, types);
  EXPECT_TRUE(tensors_close(encoded.last_hidden_state, at(golden, "last_hidden_state"), kRtol, kAtol));
  EXPECT_TRUE(tensors_close(encoded.pooler_output, at(golden, "pooler_output"), kRtol, kAtol));

  SequenceClassifierOutput out = model->forward(ids, mask, types, at(golden, "labels"));
  EXPECT_TRUE(tensors_close(out.logits, at(golden, "logits"), kRtol, kAtol));
  EXPECT_TRUE(tensors_close(out.loss, at(golden, "loss"), kRtol, 0));
  model->zero_grad();
  out.loss.backward();
  expect_gradients_match(*model, golden);
}

TEST(BertGolden, RegressionHeadMatchesTransformers) {
  Golden golden = load_golden("tiny_regression");
  auto model = bert_classifier_from_pretrained(kRegressionDir, quiet());
  ASSERT_EQ(model->config.num_labels, 1);
  ASSERT_TRUE(at(golden, "labels").is_floating_point());
  SequenceClassifierOutput out = model->forward(at(golden, "input_ids"), at(golden, "attention_mask"),
                                                at(golden, "token_type_ids"), at(golden, "labels"));
  EXPECT_TRUE(tensors_close(out.logits, at(golden, "logits"), kRtol, kAtol));
  EXPECT_TRUE(tensors_close(out.loss, at(golden, "loss"), kRtol, 0));
  out.loss.backward();
  expect_gradients_match(*model, golden);
}

// BertModel with a pooler, gelu_new and a non-default layer_norm_eps; checkpoint names have
// no "bert." prefix. The loss is the golden file's fixed projection of both outputs.
TEST(BertGolden, BaseModelWithGeluNewMatchesTransformers) {
  Golden golden = load_golden("tiny_gelu_new");
  auto model = bert_from_pretrained(kGeluNewDir, quiet());
  ASSERT_NE(model->pooler, nullptr) << "the checkpoint has a pooler";
  EXPECT_EQ(model->config.hidden_act, "gelu_new");
  EXPECT_DOUBLE_EQ(model->config.layer_norm_eps, 1e-7);
  BertOutput out = model->forward(at(golden, "input_ids"), at(golden, "attention_mask"), at(golden, "token_type_ids"));
  EXPECT_TRUE(tensors_close(out.last_hidden_state, at(golden, "last_hidden_state"), kRtol, kAtol));
  EXPECT_TRUE(tensors_close(out.pooler_output, at(golden, "pooler_output"), kRtol, kAtol));
  Tensor loss = (out.last_hidden_state * at(golden, "weight_last_hidden_state")).sum() +
                (out.pooler_output * at(golden, "weight_pooler_output")).sum();
  EXPECT_TRUE(tensors_close(loss, at(golden, "loss"), kRtol, 0));
  loss.backward();
  expect_gradients_match(*model, golden);
}

// bert_from_pretrained on a classifier checkpoint strips the "bert." prefix and keeps the pooler.
TEST(BertGolden, BaseModelFromClassifierCheckpoint) {
  Golden golden = load_golden("tiny");
  auto model = bert_from_pretrained(kTinyDir, quiet());
  ASSERT_NE(model->pooler, nullptr);
  model->eval();
  BertOutput out = model->forward(at(golden, "input_ids"), at(golden, "attention_mask"), at(golden, "token_type_ids"));
  EXPECT_TRUE(tensors_close(out.last_hidden_state, at(golden, "last_hidden_state"), kRtol, kAtol));
  EXPECT_TRUE(tensors_close(out.pooler_output, at(golden, "pooler_output"), kRtol, kAtol));
}

// Ten steps of the Hugging Face recipe: AdamW, no decay on biases and LayerNorm weights.
// The losses barely feel the weight decay in ten steps, so the final parameters are checked
// too, to 1e-5: decaying the LayerNorm weights (~1) by mistake moves them by ~1e-4. Except
// the key biases: softmax over keys is invariant to q . bias, so their exact gradient is 0
// and both frameworks get rounding noise (~1e-10), which Adam normalizes into steps of up to
// lr * noise / eps; their values after training are noise, different in every framework.
TEST(BertGolden, TenAdamWStepsMatchPyTorch) {
  Golden golden = load_golden("tiny");
  auto model = bert_classifier_from_pretrained(kTinyDir, quiet());
  model->train();
  nn::AdamW optimizer(nn::decay_groups(*model, 1e-3, 0.01), nn::AdamWOptions{});
  std::vector<float> expected = at(golden, "adamw_losses").to_vector<float>();
  ASSERT_EQ(expected.size(), 11u);  // loss after 0, 1, ..., 10 steps
  for (size_t step = 0; step < expected.size(); ++step) {
    optimizer.zero_grad();
    Tensor loss = model->forward(at(golden, "input_ids"), at(golden, "attention_mask"), at(golden, "token_type_ids"),
                                 at(golden, "labels"))
                      .loss;
    EXPECT_NEAR(loss.item<float>(), expected[step], 1e-4 * std::fabs(expected[step])) << "after " << step << " steps";
    if (step + 1 < expected.size()) {
      loss.backward();
      optimizer.step();
    }
  }
  for (auto& [name, param] : model->named_parameters()) {
    if (name.ends_with("attention.self.key.bias")) continue;
    EXPECT_TRUE(tensors_close(param, at(golden, "adamw." + name), 1e-5, 1e-5)) << name << " after 10 steps";
  }
}

TEST(BertPretrained, SavePretrainedRoundTrip) {
  Golden golden = load_golden("tiny");
  auto model = bert_classifier_from_pretrained(kTinyDir, quiet());
  model->eval();
  TempDir temp;
  save_pretrained(*model, model->config, temp.str());
  if (const char* keep = std::getenv("ACCEL_KEEP_SAVED_BERT_DIR")) save_pretrained(*model, model->config, keep);

  auto reloaded = bert_classifier_from_pretrained(temp.str(), quiet());
  reloaded->eval();
  EXPECT_EQ(reloaded->config.to_json(), model->config.to_json());
  std::map<std::string, Tensor> before = model->state_dict(), after = reloaded->state_dict();
  ASSERT_EQ(before.size(), after.size());
  for (auto& [name, value] : before) {
    ASSERT_TRUE(after.count(name)) << name;
    EXPECT_TRUE(equal(after.at(name), value)) << name;
  }
  const Tensor &ids = at(golden, "input_ids"), &mask = at(golden, "attention_mask"),
               &types = at(golden, "token_type_ids");
  EXPECT_TRUE(tensors_close(reloaded->forward(ids, mask, types).logits, model->forward(ids, mask, types).logits, 0, 0));
  EXPECT_TRUE(tensors_close(reloaded->forward(ids, mask, types).logits, at(golden, "logits"), kRtol, kAtol));
}

// Gradient checkpointing recomputes each encoder layer in backward; with the generator
// rewound, dropout draws the same masks, so the gradients must equal the plain path's. The
// checkpointed forward runs without recording, which takes the inference kernels (linear_gelu's
// GEMM epilogue, the attention without a saved P): the loss agrees to float32 rounding, not bit
// for bit (a clang build differed in the last place), while another dropout mask would move it
// by orders of magnitude more.
void expect_checkpointing_matches_plain(double dropout, bool bf16 = false) {
  Golden golden = load_golden("tiny");
  BertConfig config = BertConfig::from_file(kTinyDir + "/config.json");
  config.hidden_dropout_prob = config.attention_probs_dropout_prob = dropout;
  manual_seed(7);
  auto model = std::make_shared<BertForSequenceClassification>(config);
  model->load_state_dict(bert_classifier_from_pretrained(kTinyDir, quiet())->state_dict());
  model->train();
  auto gradients = [&](bool checkpointing) {
    model->bert->gradient_checkpointing_enable(checkpointing);
    model->zero_grad();
    manual_seed(1234);
    Tensor loss;
    {
      AutocastGuard autocast(kBFloat16, bf16);
      loss = model->forward(at(golden, "input_ids"), at(golden, "attention_mask"), at(golden, "token_type_ids"),
                            at(golden, "labels"))
                 .loss;
    }
    loss.backward();  // outside the autocast region: the recomputation replays it
    std::map<std::string, Tensor> grads;
    for (auto& [name, param] : model->named_parameters()) grads[name] = param.grad().clone();
    return std::pair{loss.item<float>(), grads};
  };
  auto [plain_loss, plain] = gradients(false);
  auto [checkpointed_loss, checkpointed] = gradients(true);
  // In bf16 the no-grad forward's kernels (the fused GELU epilogue rounds once where the
  // recording composition rounds twice) hand each checkpointed layer an input that differs
  // from the plain path's in bf16 rounding, so loss and gradients agree to that.
  EXPECT_NEAR(checkpointed_loss, plain_loss, (bf16 ? 1e-2 : 1e-6) * std::fabs(plain_loss));
  for (auto& [name, grad] : plain) {
    const double largest = grad.abs().max().item<double>();
    if (bf16 && name.ends_with("key.bias")) {
      // Zero in exact arithmetic (softmax ignores a shift shared by a query's scores): rounding noise on both sides.
      EXPECT_LT(checkpointed.at(name).abs().max().item<double>(), 1e-4) << name;
      continue;
    }
    EXPECT_GT(largest, 0.0) << name;
    EXPECT_TRUE(tensors_close(checkpointed.at(name), grad, bf16 ? 2e-2 : 1e-6, bf16 ? 2e-2 * largest : 1e-6))
        << name << " with dropout " << dropout;
  }
  if (bf16) return;
  if (dropout > 0) {
    // Dropout really was active: the loss differs from the deterministic golden one.
    EXPECT_GT(std::fabs(plain_loss - at(golden, "loss").item<float>()), 1e-4);
  } else {
    EXPECT_NEAR(plain_loss, at(golden, "loss").item<float>(), 1e-4);
  }
}

TEST(BertGradientCheckpointing, MatchesPlainPathWithoutDropout) { expect_checkpointing_matches_plain(0.0); }
TEST(BertGradientCheckpointing, MatchesPlainPathWithDropout) { expect_checkpointing_matches_plain(0.1); }
// Under bf16 autocast every weight still gets its gradient: the no-grad forward's weight casts
// have no history and are never reused by the recording recomputation.
TEST(BertGradientCheckpointing, MatchesPlainPathUnderBf16Autocast) { expect_checkpointing_matches_plain(0.1, true); }

// pooled_output computes the last layer at position 0 alone; in float64 it must give the
// pooler output and every parameter's gradient of forward's full computation, with padding
// in the mask, with and without gradient checkpointing, and for more than one layer.
void expect_pooled_output_matches_forward(bool checkpointing, int64_t layers) {
  Golden golden = load_golden("tiny");
  BertConfig config = BertConfig::from_file(kTinyDir + "/config.json");
  config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0;  // the two paths draw differently
  config.num_hidden_layers = layers;
  manual_seed(11);
  BertModel model(config);
  model.to(kFloat64);
  model.train();
  model.gradient_checkpointing_enable(checkpointing);
  const Tensor& ids = at(golden, "input_ids");
  Tensor mask = at(golden, "attention_mask").clone();
  mask.select(0, 0).slice(0, mask.size(1) - 3, mask.size(1)).zero_();  // padding at the end of row 0
  const Tensor& types = at(golden, "token_type_ids");
  Tensor weight = randn({ids.size(0), config.hidden_size}, kFloat64);  // loss = sum(pooled * weight)
  auto run = [&](bool pooled_only) {
    model.zero_grad();
    Tensor pooled = pooled_only ? model.pooled_output(ids, mask, types) : model.forward(ids, mask, types).pooler_output;
    (pooled * weight).sum().backward();
    std::map<std::string, Tensor> grads;
    for (auto& [name, param] : model.named_parameters()) grads[name] = param.grad().clone();
    return std::pair{pooled.detach(), grads};
  };
  auto [full, full_grads] = run(false);
  auto [pooled, pooled_grads] = run(true);
  ASSERT_EQ(pooled.sizes(), (Shape{ids.size(0), config.hidden_size}));
  EXPECT_TRUE(tensors_close(pooled, full, 1e-12, 1e-14));
  for (auto& [name, grad] : full_grads) {
    ASSERT_TRUE(pooled_grads.at(name).defined()) << name << " got no gradient";
    EXPECT_TRUE(tensors_close(pooled_grads.at(name), grad, 1e-10, 1e-14)) << "gradient of " << name;
  }
}

TEST(BertPooledOutput, EqualsForwardsPoolerOutputAndGradientsInFloat64) {
  expect_pooled_output_matches_forward(false, 2);
}
TEST(BertPooledOutput, EqualsForwardWithGradientCheckpointing) { expect_pooled_output_matches_forward(true, 2); }
TEST(BertPooledOutput, EqualsForwardWithOneLayer) { expect_pooled_output_matches_forward(false, 1); }

// The shared fixture: a BertModel checkpoint without a pooler.
TEST(BertPretrained, SharedTinyBertLoadsAndRuns) {
  auto model = bert_from_pretrained(kSharedTinyBert, quiet());
  EXPECT_EQ(model->pooler, nullptr) << "the checkpoint has no pooler, so none is created";
  EXPECT_EQ(model->config.vocab_size, 256);
  EXPECT_EQ(model->config.hidden_size, 32);
  EXPECT_EQ(model->config.intermediate_size, 64);
  EXPECT_EQ(model->encoder->layer->size(), 2u);
  EXPECT_EQ(model->embeddings->position_embeddings->weight.sizes(), (Shape{128, 32}));
  model->eval();
  Tensor ids = from_vector<int64_t>({2, 45, 67, 89, 3, 2, 100, 3, 0, 0}, {2, 5});
  Tensor mask = from_vector<int64_t>({1, 1, 1, 1, 1, 1, 1, 1, 0, 0}, {2, 5});
  BertOutput out = model->forward(ids, mask);
  EXPECT_EQ(out.last_hidden_state.sizes(), (Shape{2, 5, 32}));
  EXPECT_FALSE(out.pooler_output.defined());
  for (float v : out.last_hidden_state.to_vector<float>()) ASSERT_TRUE(std::isfinite(v));
  // Post-LayerNorm outputs: each token's features have mean ~0 and unit variance before the
  // affine part, so with trained weights the values stay in a sane range.
  EXPECT_LT(abs(out.last_hidden_state).max().item<float>(), 100.0f);
}

// A server answering requests on one model from several threads: each thread's forwards,
// float32 and under bf16 autocast, with packed weights shared between them (weight_packing.h)
// and its own autocast casts (thread-local), give the single-threaded hidden states.
TEST(BertPretrained, ConcurrentInferenceMatchesOneThread) {
  auto model = bert_from_pretrained(kSharedTinyBert, quiet());
  model->eval();
  Tensor ids = from_vector<int64_t>({2, 45, 67, 89, 3, 2, 100, 3, 0, 0}, {2, 5});
  Tensor mask = from_vector<int64_t>({1, 1, 1, 1, 1, 1, 1, 1, 0, 0}, {2, 5});
  auto hidden = [&](bool bf16) {
    NoGradGuard no_grad;
    AutocastGuard autocast(kBFloat16, bf16);
    return model->forward(ids, mask).last_hidden_state;
  };
  const Tensor expected_fp32 = hidden(false), expected_bf16 = hidden(true);
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      for (int call = 0; call < 10; ++call) {
        const bool bf16 = (t + call) % 2 == 1;
        if (!allclose(hidden(bf16), bf16 ? expected_bf16 : expected_fp32, 1e-6, 1e-6)) ++wrong;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(wrong.load(), 0) << "forwards that differ from the single-threaded ones";
}

// from_pretrained builds the model without initializing it (seconds for BERT-base, drawn only
// to be overwritten) and initializes just what the checkpoint lacks, as transformers does:
// every checkpoint tensor arrives exactly; the missing pooler and classifier and a LayerNorm
// dropped from the file get BERT's initialization; nothing is left uninitialized.
TEST(BertPretrained, InitializesOnlyTheWeightsTheCheckpointLacks) {
  TempDir temp;
  fs::path dir = temp.path / "model";
  fs::create_directories(dir);
  fs::copy_file(fs::path(kSharedTinyBert) / "config.json", dir / "config.json");
  std::map<std::string, Tensor> weights = safetensors::load(kSharedTinyBert + "/model.safetensors").tensors;
  ASSERT_EQ(weights.erase("encoder.layer.1.output.LayerNorm.weight"), 1u);
  safetensors::save((dir / "model.safetensors").string(), weights);

  manual_seed(3);
  auto model = bert_classifier_from_pretrained(dir.string(), quiet());
  std::set<std::string> fresh;
  for (auto& [name, param] : model->named_parameters()) {
    const std::string key = name.substr(std::string("bert.").size());
    if (name.starts_with("bert.") && weights.count(key)) {
      EXPECT_TRUE(tensors_close(param, weights.at(key), 0, 0)) << name;
    } else {
      fresh.insert(name);
    }
  }
  const std::set<std::string> expected = {"bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight",
                                          "classifier.bias", "bert.encoder.layer.1.output.LayerNorm.weight"};
  EXPECT_EQ(fresh, expected);
  const auto params = model->named_parameters();
  auto param = [&](const std::string& name) {
    for (auto& [n, p] : params) {
      if (n == name) return p;
    }
    return Tensor();
  };
  EXPECT_TRUE(tensors_close(param("bert.encoder.layer.1.output.LayerNorm.weight"), ones({32}), 0, 0));
  EXPECT_TRUE(tensors_close(param("classifier.bias"), zeros({2}), 0, 0));
  EXPECT_TRUE(tensors_close(param("bert.pooler.dense.bias"), zeros({32}), 0, 0));
  Tensor pooler = param("bert.pooler.dense.weight");  // N(0, 0.02): 1024 draws
  EXPECT_NEAR(pooler.mean().item<double>(), 0.0, 0.003);
  EXPECT_NEAR(accel::std(pooler).item<double>(), 0.02, 0.002);
  EXPECT_GT(param("classifier.weight").abs().max().item<double>(), 0.0);

  // What was drawn is drawn from the seeded generator: the same seed gives the same model.
  manual_seed(3);
  auto again = bert_classifier_from_pretrained(dir.string(), quiet());
  for (auto& [name, p] : again->named_parameters()) EXPECT_TRUE(tensors_close(p, param(name), 0, 0)) << name;
}

TEST(BertPretrained, SkipInitGuardLeavesTensorsAndTheGeneratorAlone) {
  Tensor t = full({4, 4}, 7.0);
  manual_seed(5);
  const uint64_t offset = default_generator().offset();
  {
    nn::init::SkipInitGuard skip;
    nn::init::normal_(t);
    nn::init::zeros_(t);
    nn::Linear linear(4, 4);  // constructed, not initialized
  }
  EXPECT_TRUE(tensors_close(t, full({4, 4}, 7.0), 0, 0));
  EXPECT_EQ(default_generator().offset(), offset);
  nn::init::zeros_(t);  // the guard is gone
  EXPECT_TRUE(tensors_close(t, zeros({4, 4}), 0, 0));
}

// ---- errors name the problem and the file ----

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(BertPooledOutput, NeedsAPoolingLayer) {
  BertModel model(BertConfig::from_file(kTinyDir + "/config.json"), /*add_pooling_layer=*/false);
  Tensor ids = from_vector<int64_t>({2, 45, 67, 3}, {1, 4});
  EXPECT_THAT(error_of([&] { model.pooled_output(ids); }), HasSubstr("without a pooling layer"));
}

TEST(BertPretrainedErrors, MissingDirectory) {
  std::string message = error_of([] { bert_from_pretrained("/nonexistent/accel/bert-model", quiet()); });
  EXPECT_THAT(message, HasSubstr("/nonexistent/accel/bert-model"));
  EXPECT_THAT(message, HasSubstr("no such model directory"));
}

TEST(BertPretrainedErrors, ConfigMissingRequiredField) {
  TempDir temp;
  std::string dir = copy_tiny(temp, [](nlohmann::json& c) { c.erase("num_attention_heads"); });
  std::string message = error_of([&] { bert_classifier_from_pretrained(dir, quiet()); });
  EXPECT_THAT(message, HasSubstr("config.json"));
  EXPECT_THAT(message, HasSubstr("missing required field \"num_attention_heads\""));
}

TEST(BertPretrainedErrors, InvalidJson) {
  TempDir temp;
  std::string dir = copy_tiny(temp, [](nlohmann::json&) {});
  std::ofstream(fs::path(dir) / "config.json") << "{\"vocab_size\": 99, \"hidden_size\": ";
  std::string message = error_of([&] { bert_from_pretrained(dir, quiet()); });
  EXPECT_THAT(message, HasSubstr(dir + "/config.json"));
  EXPECT_THAT(message, HasSubstr("invalid JSON"));
}

TEST(BertPretrainedErrors, CheckpointShapesDoNotFitConfig) {
  TempDir temp;
  std::string dir = copy_tiny(temp, [](nlohmann::json& c) { c["hidden_size"] = 48; });
  std::string message = error_of([&] { bert_classifier_from_pretrained(dir, quiet()); });
  EXPECT_THAT(message, HasSubstr("does not fit the model built from config.json"));
  EXPECT_THAT(message, HasSubstr("bert.embeddings.word_embeddings.weight: checkpoint [99, 32] vs model [99, 48]"));
}

TEST(BertPretrainedErrors, CheckpointOfAnotherModel) {
  TempDir temp;
  std::string dir = copy_tiny(temp, [](nlohmann::json&) {});
  safetensors::save(dir + "/model.safetensors", {{"transformer.h.0.attn.c_attn.weight", zeros({32, 96})},
                                                 {"transformer.wte.weight", zeros({99, 32})}});
  std::string message = error_of([&] { bert_from_pretrained(dir, quiet()); });
  EXPECT_THAT(message, HasSubstr(dir));
  EXPECT_THAT(message, HasSubstr("holds no BERT encoder weights"));
}

TEST(BertPretrainedErrors, NoWeightsFile) {
  TempDir temp;
  std::string dir = copy_tiny(temp, [](nlohmann::json&) {});
  fs::remove(fs::path(dir) / "model.safetensors");
  std::string message = error_of([&] { bert_from_pretrained(dir, quiet()); });
  EXPECT_THAT(message, HasSubstr("no weights found"));
}

}  // namespace
}  // namespace accel::models
