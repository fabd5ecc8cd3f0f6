// `accel merge-weights CKPT_DIR OUT_DIR`: consolidates a ZeRO checkpoint (each rank's
// parameter shards, as save_state writes them under ZeRO stages 1-3) into one
// model.safetensors with Hugging Face names, which transformers loads and accel loads at
// any world size. The checkpoint is verified against its checksums first; the output is
// written beside its final name and renamed into place, so a failure leaves no half file.
#include <filesystem>
#include <fstream>
#include <iostream>

#include "accelerate/accelerator.h"
#include "core/safetensors.h"
#include "distributed/zero.h"
#include "tools/commands.h"

namespace accel::tools {

namespace fs = std::filesystem;

namespace {

nlohmann::json read_layout(const fs::path& path) {
  std::ifstream in(path);
  ACCEL_CHECK(in.good(), path.parent_path().string(), ": no zero.json: this is not a checkpoint saved under ZeRO "
              "(a plain checkpoint's model.safetensors is already whole)");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    ACCEL_FAIL(path.string(), ": invalid JSON: ", e.what());
  }
}

int merge_weights(const std::string& checkpoint, const std::string& out_dir, const std::string& config) {
  verify_checkpoint(checkpoint);
  const fs::path root(checkpoint);
  nlohmann::json layout = read_layout(root / "zero.json");
  ACCEL_CHECK(layout.contains("world_size") && layout["world_size"].is_number_integer() &&
                  layout["world_size"].get<int64_t>() >= 1 && layout.contains("parameters"),
              (root / "zero.json").string(), ": expected world_size (a positive integer) and parameters");
  const int64_t world = layout["world_size"].get<int64_t>();
  std::vector<std::map<std::string, Tensor>> shards;
  for (int64_t r = 0; r < world; ++r) {
    fs::path file = root / ("zero_model_rank_" + std::to_string(r) + ".safetensors");
    ACCEL_CHECK(fs::exists(file), checkpoint, ": the layout is for ", world, " ranks but ", file.filename().string(),
                " is missing");
    shards.push_back(safetensors::load(file.string()).tensors);
  }
  std::map<std::string, Tensor> merged = distributed::merge_parameter_shards(layout, shards);

  fs::create_directories(out_dir);
  const fs::path target = fs::path(out_dir) / "model.safetensors";
  fs::path staging = target;
  staging += ".incomplete";
  safetensors::save(staging.string(), merged, {{"format", "pt"}});
  fs::rename(staging, target);
  if (!config.empty()) fs::copy_file(config, fs::path(out_dir) / "config.json", fs::copy_options::overwrite_existing);
  int64_t elements = 0;
  for (auto& [name, tensor] : merged) elements += tensor.numel();
  std::cout << "merged " << merged.size() << " tensors (" << elements << " parameters) from " << world
            << " ZeRO stage-" << layout.value("stage", 0) << " shards into " << target.string() << "\n";
  return 0;
}

}  // namespace

void add_merge_weights_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("merge-weights", "Consolidate a ZeRO checkpoint's shards into one model.safetensors");
  auto checkpoint = std::make_shared<std::string>();
  auto out_dir = std::make_shared<std::string>();
  auto config = std::make_shared<std::string>();
  cmd->add_option("checkpoint", *checkpoint, "a save_state directory written under ZeRO")->required()
      ->check(CLI::ExistingDirectory);
  cmd->add_option("out_dir", *out_dir, "where model.safetensors goes")->required();
  cmd->add_option("--config", *config, "a config.json to copy beside it (makes OUT_DIR a Hugging Face model directory)")
      ->check(CLI::ExistingFile);
  register_action(cmd, [=] { return merge_weights(*checkpoint, *out_dir, *config); });
}

}  // namespace accel::tools
