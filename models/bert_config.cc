// Parsing and validation of BERT's config.json.
#include "models/bert_config.h"

#include <fstream>

#include "core/error.h"

namespace accel::models {

namespace {

template <typename T>
void read_field(const nlohmann::json& json, const char* key, T& out, bool required, const std::string& source) {
  if (!json.contains(key) || json[key].is_null()) {
    ACCEL_CHECK(!required, source, ": missing required field \"", key, "\"");
    return;
  }
  const nlohmann::json& value = json[key];
  if constexpr (std::is_same_v<T, std::string>) {
    ACCEL_CHECK(value.is_string(), source, ": field \"", key, "\" must be a string but is ", value.dump());
  } else if constexpr (std::is_integral_v<T>) {
    ACCEL_CHECK(value.is_number_integer(), source, ": field \"", key, "\" must be an integer but is ", value.dump());
  } else {
    ACCEL_CHECK(value.is_number(), source, ": field \"", key, "\" must be a number but is ", value.dump());
  }
  out = value.get<T>();
}

}  // namespace

BertConfig BertConfig::from_json(const nlohmann::json& json, const std::string& source) {
  ACCEL_CHECK(json.is_object(), source, ": expected a JSON object but found ", json.type_name());
  BertConfig c;
  read_field(json, "vocab_size", c.vocab_size, true, source);
  read_field(json, "hidden_size", c.hidden_size, true, source);
  read_field(json, "num_hidden_layers", c.num_hidden_layers, true, source);
  read_field(json, "num_attention_heads", c.num_attention_heads, true, source);
  read_field(json, "intermediate_size", c.intermediate_size, true, source);
  read_field(json, "hidden_act", c.hidden_act, false, source);
  read_field(json, "max_position_embeddings", c.max_position_embeddings, false, source);
  read_field(json, "type_vocab_size", c.type_vocab_size, false, source);
  read_field(json, "layer_norm_eps", c.layer_norm_eps, false, source);
  read_field(json, "hidden_dropout_prob", c.hidden_dropout_prob, false, source);
  read_field(json, "attention_probs_dropout_prob", c.attention_probs_dropout_prob, false, source);
  read_field(json, "pad_token_id", c.pad_token_id, false, source);
  read_field(json, "initializer_range", c.initializer_range, false, source);
  read_field(json, "problem_type", c.problem_type, false, source);
  if (json.contains("classifier_dropout") && !json["classifier_dropout"].is_null()) {
    double p = 0;
    read_field(json, "classifier_dropout", p, false, source);
    c.classifier_dropout = p;
  }
  if (json.contains("num_labels")) {
    read_field(json, "num_labels", c.num_labels, false, source);
  } else if (json.contains("id2label") && json["id2label"].is_object()) {
    c.num_labels = static_cast<int64_t>(json["id2label"].size());  // how transformers derives it
  }
  if (json.contains("model_type") && json["model_type"].is_string()) {
    ACCEL_CHECK(json["model_type"] == "bert", source, ": model_type is \"", json["model_type"].get<std::string>(),
                "\" but accel loads \"bert\" models");
  }
  c.validate(source);
  return c;
}

BertConfig BertConfig::from_file(const std::string& path) {
  std::ifstream in(path);
  ACCEL_CHECK(in.good(), path, ": cannot open the config file (does the directory hold a config.json?)");
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    ACCEL_FAIL(path, ": invalid JSON: ", e.what());
  }
  return from_json(json, path);
}

void BertConfig::validate(const std::string& source) const {
  auto positive = [&](const char* name, int64_t v) {
    ACCEL_CHECK(v > 0, source, ": \"", name, "\" must be positive but is ", v);
  };
  positive("vocab_size", vocab_size);
  positive("hidden_size", hidden_size);
  positive("num_hidden_layers", num_hidden_layers);
  positive("num_attention_heads", num_attention_heads);
  positive("intermediate_size", intermediate_size);
  positive("max_position_embeddings", max_position_embeddings);
  positive("type_vocab_size", type_vocab_size);
  positive("num_labels", num_labels);
  ACCEL_CHECK(hidden_size % num_attention_heads == 0, source, ": hidden_size ", hidden_size,
              " is not a multiple of num_attention_heads ", num_attention_heads);
  ACCEL_CHECK(hidden_act == "gelu" || hidden_act == "gelu_new" || hidden_act == "gelu_pytorch_tanh" ||
                  hidden_act == "relu",
              source, ": hidden_act \"", hidden_act, "\" is not supported (expected gelu, gelu_new, "
              "gelu_pytorch_tanh or relu)");
  ACCEL_CHECK(layer_norm_eps > 0, source, ": layer_norm_eps must be positive but is ", layer_norm_eps);
  for (auto [name, p] : {std::pair{"hidden_dropout_prob", hidden_dropout_prob},
                         std::pair{"attention_probs_dropout_prob", attention_probs_dropout_prob},
                         std::pair{"classifier_dropout", classifier_dropout.value_or(0.0)}}) {
    ACCEL_CHECK(p >= 0 && p < 1, source, ": ", name, " must be in [0, 1) but is ", p);
  }
  ACCEL_CHECK(pad_token_id >= 0 && pad_token_id < vocab_size, source, ": pad_token_id ", pad_token_id,
              " is outside the vocabulary of ", vocab_size);
  ACCEL_CHECK(problem_type.empty() || problem_type == "single_label_classification" || problem_type == "regression",
              source, ": problem_type \"", problem_type, "\" is not supported (expected single_label_classification "
              "or regression)");
}

nlohmann::json BertConfig::to_json(const std::string& architecture) const {
  nlohmann::json id2label = nlohmann::json::object(), label2id = nlohmann::json::object();
  for (int64_t i = 0; i < num_labels; ++i) {
    id2label[std::to_string(i)] = "LABEL_" + std::to_string(i);
    label2id["LABEL_" + std::to_string(i)] = i;
  }
  nlohmann::json json = {{"model_type", "bert"},
                         {"architectures", {architecture}},
                         {"vocab_size", vocab_size},
                         {"hidden_size", hidden_size},
                         {"num_hidden_layers", num_hidden_layers},
                         {"num_attention_heads", num_attention_heads},
                         {"intermediate_size", intermediate_size},
                         {"hidden_act", hidden_act},
                         {"max_position_embeddings", max_position_embeddings},
                         {"type_vocab_size", type_vocab_size},
                         {"layer_norm_eps", layer_norm_eps},
                         {"hidden_dropout_prob", hidden_dropout_prob},
                         {"attention_probs_dropout_prob", attention_probs_dropout_prob},
                         {"pad_token_id", pad_token_id},
                         {"initializer_range", initializer_range},
                         {"id2label", id2label},
                         {"label2id", label2id}};
  if (!problem_type.empty()) json["problem_type"] = problem_type;
  if (classifier_dropout) json["classifier_dropout"] = *classifier_dropout;
  return json;
}

}  // namespace accel::models
