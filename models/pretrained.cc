// Loading and saving Hugging Face BERT directories.
#include "models/pretrained.h"

#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>

#include <nlohmann/json.hpp>

#include "core/safetensors.h"
#include "models/hub.h"
#include "models/torch_pickle.h"
#include "nn/init.h"

namespace accel::models {

namespace fs = std::filesystem;

namespace {

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::map<std::string, Tensor> load_sharded(const fs::path& index_path) {
  std::ifstream in(index_path);
  nlohmann::json index;
  try {
    index = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    ACCEL_FAIL(index_path.string(), ": invalid JSON: ", e.what());
  }
  ACCEL_CHECK(index.contains("weight_map") && index["weight_map"].is_object(), index_path.string(),
              ": expected an object \"weight_map\" mapping tensor names to shard files");
  std::set<std::string> shards;
  for (auto& [name, file] : index["weight_map"].items()) {
    ACCEL_CHECK(file.is_string(), index_path.string(), ": weight_map[\"", name, "\"] must be a file name");
    shards.insert(file.get<std::string>());
  }
  std::map<std::string, Tensor> weights;
  for (const std::string& shard : shards) {
    ACCEL_CHECK(shard.find('/') == std::string::npos && shard != "..", index_path.string(), ": shard name \"", shard,
                "\" must be a plain file name in the same directory");
    for (auto& [name, tensor] : safetensors::load((index_path.parent_path() / shard).string()).tensors) {
      weights[name] = tensor;
    }
  }
  for (auto& [name, file] : index["weight_map"].items()) {
    ACCEL_CHECK(weights.count(name), index_path.string(), ": tensor \"", name, "\" is mapped to ",
                file.get<std::string>(), " but that shard does not contain it");
  }
  return weights;
}

// The checkpoint name a module parameter is stored under, trying the usual spellings.
std::optional<std::string> find_in_checkpoint(const std::string& name, const std::map<std::string, Tensor>& weights,
                                              const std::string& model_prefix) {
  std::vector<std::string> candidates{name};
  if (!model_prefix.empty() && starts_with(name, model_prefix)) candidates.push_back(name.substr(model_prefix.size()));
  if (model_prefix.empty()) candidates.push_back("bert." + name);
  for (std::string candidate : std::vector<std::string>(candidates)) {
    // TF-era checkpoints call LayerNorm's weight/bias gamma/beta.
    if (ends_with(candidate, "LayerNorm.weight")) candidates.push_back(candidate.substr(0, candidate.size() - 6) + "gamma");
    if (ends_with(candidate, "LayerNorm.bias")) candidates.push_back(candidate.substr(0, candidate.size() - 4) + "beta");
  }
  for (const std::string& c : candidates) {
    if (weights.count(c)) return c;
  }
  return std::nullopt;
}

// The model was built under a SkipInitGuard: the modules owning a weight the checkpoint lacks get
// BERT's initialization (transformers' _initialize_missing_keys), before the checkpoint's
// weights are copied over the rest of them.
void init_missing(nn::Module& model, const std::vector<std::string>& fresh, double initializer_range) {
  std::set<std::string> missing(fresh.begin(), fresh.end());
  for (auto& [prefix, module] : model.named_modules()) {
    bool owns_missing = false;
    for (auto& [name, param] : module->named_parameters(/*recurse=*/false)) {
      owns_missing = missing.erase(prefix.empty() ? name : prefix + "." + name) > 0 || owns_missing;
    }
    if (!owns_missing) continue;
    ACCEL_CHECK(dynamic_cast<nn::Linear*>(module) || dynamic_cast<nn::Embedding*>(module) ||
                    dynamic_cast<nn::LayerNorm*>(module),
                "from_pretrained: ", prefix, " (", module->type_name(), ") lacks weights in the checkpoint and "
                "BERT's initialization does not cover it");
    init_bert_weights(*module, initializer_range);  // a leaf: its own parameters
  }
  ACCEL_CHECK(missing.empty(), "from_pretrained: ", *missing.begin(), " is not a parameter of any module");
}

// Copies checkpoint tensors into the module, built without initialization; initializes the
// weights the checkpoint lacks (and names them when verbose).
void load_into(nn::Module& model, const std::map<std::string, Tensor>& weights, const std::string& model_prefix,
               const std::string& source, bool verbose, double initializer_range) {
  std::map<std::string, Tensor> matched;
  std::vector<std::string> fresh, mismatched;
  std::set<std::string> used;
  for (auto& [name, param] : model.named_parameters()) {
    std::optional<std::string> key = find_in_checkpoint(name, weights, model_prefix);
    if (!key) {
      fresh.push_back(name);
      continue;
    }
    const Tensor& value = weights.at(*key);
    used.insert(*key);
    if (value.sizes() != param.sizes()) {
      mismatched.push_back(*key + ": checkpoint " + value.shape_string() + " vs model " + param.shape_string());
    } else {
      matched[name] = value;
    }
  }
  if (!mismatched.empty()) {
    std::string list;
    for (const std::string& m : mismatched) list += "\n  " + m;
    ACCEL_FAIL(source, ": the checkpoint does not fit the model built from config.json (", mismatched.size(),
               " shape mismatches):", list);
  }
  size_t encoder_found = 0;
  for (auto& [name, value] : matched) encoder_found += name.find("encoder.layer.") != std::string::npos;
  ACCEL_CHECK(encoder_found > 0, source, ": the checkpoint holds no BERT encoder weights (expected names like "
              "\"encoder.layer.0.attention.self.query.weight\", with or without a \"bert.\" prefix); is it a "
              "checkpoint of another model?");
  init_missing(model, fresh, initializer_range);
  model.load_state_dict(matched, /*strict=*/false);
  if (!verbose) return;
  if (!fresh.empty()) {
    std::cerr << "accel: some weights of " << model.type_name() << " were not in the checkpoint at " << source
              << " and are newly initialized:";
    for (const std::string& f : fresh) std::cerr << " " << f;
    std::cerr << "\naccel: you should probably train this model on a downstream task before using it.\n";
  }
  std::vector<std::string> unused;
  for (auto& [name, value] : weights) {
    if (!used.count(name) && !ends_with(name, "position_ids")) unused.push_back(name);
  }
  if (!unused.empty()) {
    std::cerr << "accel: " << unused.size() << " checkpoint tensors were not used by " << model.type_name()
              << " (e.g. " << unused.front() << ")\n";
  }
}

BertConfig load_config(const std::string& dir, const PretrainedOptions& options) {
  BertConfig config = BertConfig::from_file((fs::path(dir) / "config.json").string());
  if (options.num_labels) config.num_labels = *options.num_labels;
  config.validate(dir + "/config.json");
  return config;
}

bool checkpoint_has_pooler(const std::map<std::string, Tensor>& weights) {
  for (auto& [name, value] : weights) {
    if (name.find("pooler.dense") != std::string::npos) return true;
  }
  return false;
}

}  // namespace

std::map<std::string, Tensor> load_checkpoint_weights(const std::string& dir) {
  fs::path root(dir);
  ACCEL_CHECK(fs::is_directory(root), dir, ": not a directory (expected a model directory with config.json and "
              "model.safetensors)");
  if (fs::exists(root / "model.safetensors")) return safetensors::load((root / "model.safetensors").string()).tensors;
  if (fs::exists(root / "model.safetensors.index.json")) return load_sharded(root / "model.safetensors.index.json");
  // Older checkpoints: a torch.save state dict, read by a tensors-only unpickler.
  if (fs::exists(root / "pytorch_model.bin")) return load_torch_state_dict((root / "pytorch_model.bin").string());
  ACCEL_CHECK(!fs::exists(root / "pytorch_model.bin.index.json"), dir, ": sharded pytorch_model.bin checkpoints "
              "are not supported; convert the checkpoint to safetensors");
  ACCEL_FAIL(dir, ": no weights found: expected model.safetensors, model.safetensors.index.json or "
             "pytorch_model.bin");
}

std::string resolve_model_dir(const std::string& model) {
  if (fs::is_directory(model)) return model;
  ACCEL_CHECK(!fs::exists(model), model, ": not a directory (expected a model directory with config.json and "
              "weights, or a Hugging Face Hub id like \"org/name\")");
  ACCEL_CHECK(is_hub_repo_id(model), model, ": no such model directory (nor a Hugging Face Hub id like "
              "\"org/name\")");
  try {
    return hub_snapshot_download(model);
  } catch (const Error& e) {
    ACCEL_FAIL("no local directory \"", model, "\", so it was looked up as a Hugging Face Hub id: ", e.what());
  }
}

std::shared_ptr<BertModel> bert_from_pretrained(const std::string& model, const PretrainedOptions& options) {
  std::string dir = resolve_model_dir(model);
  BertConfig config = load_config(dir, options);
  std::map<std::string, Tensor> weights = load_checkpoint_weights(dir);
  std::shared_ptr<BertModel> bert;
  {
    nn::init::SkipInitGuard skip_init;  // the checkpoint's weights overwrite it: drawing them would take seconds
    bert = std::make_shared<BertModel>(config, checkpoint_has_pooler(weights));
  }
  load_into(*bert, weights, "", dir, options.verbose, config.initializer_range);
  return bert;
}

std::shared_ptr<BertForSequenceClassification> bert_classifier_from_pretrained(const std::string& model,
                                                                               const PretrainedOptions& options) {
  std::string dir = resolve_model_dir(model);
  BertConfig config = load_config(dir, options);
  std::shared_ptr<BertForSequenceClassification> classifier;
  {
    nn::init::SkipInitGuard skip_init;
    classifier = std::make_shared<BertForSequenceClassification>(config);
  }
  load_into(*classifier, load_checkpoint_weights(dir), "bert.", dir, options.verbose, config.initializer_range);
  return classifier;
}

void save_pretrained(const nn::Module& model, const BertConfig& config, const std::string& dir) {
  save_pretrained(model.state_dict(), config, model.type_name(), dir);
}

void save_pretrained(const std::map<std::string, Tensor>& weights, const BertConfig& config,
                     const std::string& type_name, const std::string& dir) {
  fs::create_directories(dir);
  safetensors::save((fs::path(dir) / "model.safetensors").string(), weights, {{"format", "pt"}});
  // config.json the same way: temp file then rename, so a reader never sees half a file.
  fs::path config_path = fs::path(dir) / "config.json";
  fs::path temp = config_path;
  temp += ".tmp";
  {
    std::ofstream out(temp);
    ACCEL_CHECK(out.good(), temp.string(), ": cannot write");
    out << config.to_json(type_name).dump(2) << "\n";
    out.flush();
    ACCEL_CHECK(out.good(), temp.string(), ": write failed");
  }
  fs::rename(temp, config_path);
}

}  // namespace accel::models
