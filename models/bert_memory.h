/// @file
/// BERT sizes for memory planning, in closed form from a BertConfig, without building a model:
/// the parameter count of BertForSequenceClassification, and an estimate of the bytes that
/// autograd saves for backward during one training forward of accel's BERT (what is alive
/// between forward and backward). The activation list follows the tensors accel's ops really
/// save on the CPU (models/bert.cc, nn/attention.cc, core/ops/attention.cc,
/// core/autograd/derivatives_*.cc: fp32 takes the fused attention), including its
/// autocast casts; tests/models/test_bert_memory.cc checks it against a counting allocator.
/// It is not a profiler: it leaves out the backward pass's own temporaries, the gradients,
/// the caller's input ids, mask and labels, and activation checkpointing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/bert_config.h"

namespace accel::models {

/// Equal to BertForSequenceClassification(config).num_parameters().
int64_t bert_for_sequence_classification_num_parameters(const BertConfig& config);

/// One tensor (or group of same-sized tensors) kept for backward.
struct SavedActivation {
  std::string description;  ///< what it is, with its shape and dtype
  int64_t bytes = 0;
};

struct ActivationEstimate {
  std::vector<SavedActivation> embeddings;
  std::vector<SavedActivation> per_encoder_layer;   ///< kept once per layer but the last
  std::vector<SavedActivation> last_encoder_layer;  ///< the last layer, which computes position 0 alone
  int64_t num_encoder_layers = 0;
  std::vector<SavedActivation> head;  ///< pooler, classifier and loss
  int64_t per_layer_bytes() const;
  int64_t last_layer_bytes() const;
  int64_t total_bytes() const;
};

/// Training-mode forward of BertForSequenceClassification on (batch_size, seq_len) tokens with
/// labels, dropout as the config says. low_precision: under autocast to fp16/bf16 (GEMMs in
/// 16 bits, LayerNorm and softmax in fp32); otherwise everything fp32.
ActivationEstimate bert_training_activations(const BertConfig& config, int64_t batch_size, int64_t seq_len,
                                             bool low_precision);

}  // namespace accel::models
