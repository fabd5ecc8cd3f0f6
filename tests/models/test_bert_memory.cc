// tests/models/test_bert_memory.cc: models/bert_memory.h against the real thing. The closed-form
// parameter count must equal what building BertForSequenceClassification gives, for the shared
// tiny-bert and for bert-base shapes. The activation estimate must equal the bytes that a
// counting CPU allocator sees still alive after a training forward (everything autograd saved
// for backward), in fp32 and under bf16 autocast, for GELU and ReLU, with and without dropout,
// for classification and regression. Under autocast the measurement also holds the 16-bit
// casts of the Linear weights, which belong to the model states, not the activations; the test
// adds them to the expectation.
#include "models/bert_memory.h"

#include <gtest/gtest.h>

#include "core/autocast.h"
#include "core/storage.h"
#include "models/bert.h"

namespace accel::models {
namespace {

const std::string kSharedTinyBert = std::string(ACCEL_SHARED_DATA_DIR) + "/tiny-bert";

TEST(BertMemory, ParameterCountMatchesTheBuiltModel) {
  BertConfig tiny = BertConfig::from_file(kSharedTinyBert + "/config.json");
  EXPECT_EQ(bert_for_sequence_classification_num_parameters(tiny),
            BertForSequenceClassification(tiny).num_parameters());
  tiny.num_labels = 5;
  tiny.intermediate_size = 48;
  EXPECT_EQ(bert_for_sequence_classification_num_parameters(tiny),
            BertForSequenceClassification(tiny).num_parameters());

  BertConfig base;  // the defaults are bert-base-uncased: 12 layers, 768 wide, 30522 tokens
  EXPECT_EQ(bert_for_sequence_classification_num_parameters(base), 109'483'778);  // as transformers counts it
  // bert-base's layer shapes built for real, with one layer and a small vocabulary to stay quick.
  base.num_hidden_layers = 1;
  base.vocab_size = 1000;
  EXPECT_EQ(bert_for_sequence_classification_num_parameters(base), BertForSequenceClassification(base).num_parameters());
}

// Wraps the CPU allocator and counts the bytes currently allocated through it.
class CountingAllocator final : public Allocator {
 public:
  CountingAllocator() : inner_(get_allocator(DeviceType::CPU)) { set_allocator(DeviceType::CPU, this); }
  ~CountingAllocator() override { set_allocator(DeviceType::CPU, inner_); }
  void* allocate(size_t nbytes, Device device) override {
    live_bytes_ += static_cast<int64_t>(nbytes);
    return inner_->allocate(nbytes, device);
  }
  void deallocate(void* ptr, size_t nbytes, Device device) override {
    live_bytes_ -= static_cast<int64_t>(nbytes);
    inner_->deallocate(ptr, nbytes, device);
  }
  int64_t live_bytes() const { return live_bytes_; }

 private:
  Allocator* inner_;
  int64_t live_bytes_ = 0;
};

int64_t linear_weight_elements(BertForSequenceClassification& model) {
  int64_t elements = 0;
  for (auto& [name, module] : model.named_modules()) {
    if (auto* linear = dynamic_cast<nn::Linear*>(module)) elements += linear->weight.numel();
  }
  return elements;
}

// Bytes alive after a training forward with labels, beyond what was alive before it.
int64_t measured_forward_bytes(const BertConfig& config, int64_t B, int64_t T, bool low_precision) {
  BertForSequenceClassification model(config);
  model.train();
  Tensor input_ids = randint(0, config.vocab_size, {B, T});
  Tensor attention_mask = ones({B, T}, kInt64);
  attention_mask.select(0, 0).slice(0, T - 2, T).zero_();  // some padding in the first row
  const bool regression = config.num_labels == 1;
  Tensor labels = regression ? randn({B}) : randint(0, config.num_labels, {B});
  CountingAllocator counter;
  Tensor loss;
  {
    AutocastGuard autocast(kBFloat16, low_precision);
    loss = model.forward(input_ids, attention_mask, Tensor(), labels).loss;
  }
  EXPECT_TRUE(loss.requires_grad());
  const int64_t loss_bytes = 4;  // the fp32 scalar itself
  const int64_t weight_casts = low_precision ? 2 * linear_weight_elements(model) : 0;
  return counter.live_bytes() - loss_bytes - weight_casts;
}

struct Case {
  const char* name;
  std::function<void(BertConfig&)> change;
};

TEST(BertMemory, ActivationEstimateMatchesWhatAutogradKeeps) {
  const BertConfig tiny = BertConfig::from_file(kSharedTinyBert + "/config.json");
  const std::vector<Case> cases = {
      {"tiny-bert as shipped (gelu, dropout 0.1)", [](BertConfig&) {}},
      {"relu", [](BertConfig& c) { c.hidden_act = "relu"; }},
      {"gelu_new", [](BertConfig& c) { c.hidden_act = "gelu_new"; }},
      {"no dropout",
       [](BertConfig& c) {
         c.hidden_dropout_prob = 0.0;
         c.attention_probs_dropout_prob = 0.0;
       }},
      {"regression, no classifier dropout",
       [](BertConfig& c) {
         c.num_labels = 1;
         c.classifier_dropout = 0.0;
       }},
  };
  const int64_t B = 3, T = 10;
  for (const Case& test_case : cases) {
    BertConfig config = tiny;
    test_case.change(config);
    for (bool low_precision : {false, true}) {
      const int64_t estimate = bert_training_activations(config, B, T, low_precision).total_bytes();
      EXPECT_EQ(measured_forward_bytes(config, B, T, low_precision), estimate)
          << test_case.name << (low_precision ? ", bf16 autocast" : ", fp32");
    }
  }
}

TEST(BertMemory, ActivationEstimateRejectsBadShapes) {
  const BertConfig tiny = BertConfig::from_file(kSharedTinyBert + "/config.json");
  EXPECT_THROW(bert_training_activations(tiny, 0, 8, false), Error);
  try {
    bert_training_activations(tiny, 2, 129, false);
    FAIL() << "a sequence longer than max_position_embeddings was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("max_position_embeddings 128"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace accel::models
