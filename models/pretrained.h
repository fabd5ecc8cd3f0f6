/// @file
/// Hugging Face checkpoints: reading a model directory's weights (model.safetensors, a
/// sharded model.safetensors.index.json, or an old pytorch_model.bin), matching checkpoint
/// names to a module's (with or without the "bert." prefix, old LayerNorm gamma/beta names),
/// and writing directories that transformers loads.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "models/bert.h"

namespace accel::models {

/// Every tensor of the checkpoint in `dir`, by its checkpoint name.
std::map<std::string, Tensor> load_checkpoint_weights(const std::string& dir);

/// Resolves a model argument to a local directory: an existing directory as is; otherwise a
/// Hub id ("org/name"), looked up in the Hugging Face cache and downloaded when allowed.
std::string resolve_model_dir(const std::string& model);

struct PretrainedOptions {
  std::optional<int64_t> num_labels;  ///< overrides config.json for classification heads
  bool verbose = true;                ///< print which weights were newly initialized / unused
};

/// Loads config.json and weights; weights missing from the checkpoint (a fresh head, a
/// pooler the checkpoint lacks) keep their initialization and are reported, as transformers
/// does. A shape mismatch or a checkpoint with no BERT weights at all is an error.
std::shared_ptr<BertModel> bert_from_pretrained(const std::string& model, const PretrainedOptions& options = {});
std::shared_ptr<BertForSequenceClassification> bert_classifier_from_pretrained(const std::string& model,
                                                                               const PretrainedOptions& options = {});

/// Writes config.json and model.safetensors (HF names) into dir, creating it.
void save_pretrained(const nn::Module& model, const BertConfig& config, const std::string& dir);
/// The same from weights already collected (Accelerator::get_state_dict, which gathers a
/// ZeRO-3 model); type_name is the architecture config.json names ("BertForSequenceClassification").
void save_pretrained(const std::map<std::string, Tensor>& weights, const BertConfig& config,
                     const std::string& type_name, const std::string& dir);

}  // namespace accel::models
