/// @file
/// BertConfig: the fields of a Hugging Face BERT config.json that the model reads, parsed
/// with a clear error for a missing or invalid field, and written back in the same format.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace accel::models {

struct BertConfig {
  int64_t vocab_size = 30522;
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t intermediate_size = 3072;
  std::string hidden_act = "gelu";  // gelu (erf form), gelu_new / gelu_pytorch_tanh (tanh form), relu
  int64_t max_position_embeddings = 512;
  int64_t type_vocab_size = 2;
  double layer_norm_eps = 1e-12;
  double hidden_dropout_prob = 0.1;
  double attention_probs_dropout_prob = 0.1;
  std::optional<double> classifier_dropout;  ///< the classification head's; hidden_dropout_prob when unset
  int64_t pad_token_id = 0;
  double initializer_range = 0.02;
  int64_t num_labels = 2;
  std::string problem_type;  ///< "", "single_label_classification" or "regression"

  /// Required: vocab_size, hidden_size, num_hidden_layers, num_attention_heads,
  /// intermediate_size; the rest default as transformers' BertConfig. `source` names the file
  /// in errors.
  static BertConfig from_json(const nlohmann::json& json, const std::string& source);
  static BertConfig from_file(const std::string& path);
  /// `architecture` is the model class transformers should build ("BertModel", ...).
  nlohmann::json to_json(const std::string& architecture = "BertForSequenceClassification") const;
  void validate(const std::string& source) const;
};

}  // namespace accel::models
