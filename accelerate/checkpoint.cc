// Accelerator checkpoints. A checkpoint directory holds:
//   model.safetensors (model_<i> for the i-th prepared model)   weights, HF names
//   optimizer.safetensors + optimizer.json (optimizer_<i>)       optimizer tensors + hyperparameters
//   scheduler.json (scheduler_<i>)                               schedule position
//   scaler.json                                                  fp16 loss scale
//   random_states_<rank>.json                                    Philox seed and offset, per rank
//   dataloader.json                                              epoch and batches consumed, per loader
//   custom_checkpoint_<i>.safetensors/.json                      register_for_checkpointing objects
//   accelerator.json                                             step counter
// Under ZeRO (stages 1-3) the model and optimizer are saved as each rank holds them instead:
//   zero.json                                                    the partition (ZeroEngine::layout)
//   zero_model_rank_<r>.safetensors                              rank r's parameter shards
//   optimizer_rank_<r>.safetensors + .json                       rank r's optimizer state
// `accel merge-weights` consolidates the shards into one model.safetensors.
//   accel_checkpoint.json                                        written last: SHA-256 of every file
// Everything is written into "<dir>.incomplete" and renamed into place only when complete,
// so a crash mid-save leaves the previous checkpoint intact and never a half one under the
// real name; load_state verifies every checksum before touching any state.
#include <fcntl.h>
#include <stdio.h>  // renameat2
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>

#include "accelerate/accelerator.h"
#include "core/autograd/grad_mode.h"
#include "core/random.h"
#include "core/safetensors.h"

namespace accel {

namespace fs = std::filesystem;

namespace {

constexpr const char* kManifest = "accel_checkpoint.json";
constexpr const char* kFormat = "accel-checkpoint-1";

std::string indexed(const std::string& stem, size_t i, const std::string& ext) {
  return (i == 0 ? stem : stem + "_" + std::to_string(i)) + ext;
}

void fsync_path(const fs::path& path, bool directory) {
  int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  ACCEL_CHECK(fd >= 0, path.string(), ": cannot open to sync: ", std::strerror(errno));
  int rc = ::fsync(fd);
  ::close(fd);
  ACCEL_CHECK(rc == 0, path.string(), ": fsync failed: ", std::strerror(errno));
}

void write_json(const fs::path& path, const nlohmann::json& json) {
  {
    std::ofstream out(path);
    ACCEL_CHECK(out.good(), path.string(), ": cannot open for writing: ", std::strerror(errno));
    out << json.dump(2) << "\n";
    out.flush();
    ACCEL_CHECK(out.good(), path.string(), ": write failed: ", std::strerror(errno));
  }
  fsync_path(path, false);
}

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  ACCEL_CHECK(in.good(), path.string(), ": missing from the checkpoint");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    ACCEL_FAIL(path.string(), ": invalid JSON: ", e.what());
  }
}

std::string sha256_of(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  ACCEL_CHECK(in.good(), path.string(), ": cannot open to checksum");
  // OpenSSL's EVP interface (the SHA256_* calls are deprecated since OpenSSL 3.0).
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  ACCEL_CHECK(ctx && EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1, path.string(),
              ": OpenSSL could not start a SHA-256 digest");
  std::vector<char> buffer(1 << 20);
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    ACCEL_CHECK(EVP_DigestUpdate(ctx.get(), buffer.data(), static_cast<size_t>(in.gcount())) == 1, path.string(),
                ": SHA-256 digest update failed");
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_length = 0;
  ACCEL_CHECK(EVP_DigestFinal_ex(ctx.get(), digest, &digest_length) == 1 && digest_length == 32, path.string(),
              ": SHA-256 digest failed");
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < digest_length; ++i) {
    const unsigned char byte = digest[i];
    out += hex[byte >> 4];
    out += hex[byte & 15];
  }
  return out;
}

// Every file of a checkpoint (except the manifest) with its checksum.
nlohmann::json checksums(const fs::path& dir) {
  nlohmann::json files = nlohmann::json::object();
  std::vector<fs::path> entries;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.is_regular_file() && entry.path().filename() != kManifest) entries.push_back(entry.path());
  }
  std::sort(entries.begin(), entries.end());
  for (const fs::path& p : entries) files[p.filename().string()] = sha256_of(p);
  return files;
}

// The checkpoint_N directories under `checkpoints`, sorted by N.
std::vector<std::pair<int64_t, fs::path>> numbered_checkpoints(const fs::path& checkpoints) {
  std::vector<std::pair<int64_t, fs::path>> found;
  if (!fs::is_directory(checkpoints)) return found;
  std::regex pattern("checkpoint_([0-9]+)");
  for (const auto& entry : fs::directory_iterator(checkpoints)) {
    std::smatch match;
    std::string name = entry.path().filename().string();
    if (entry.is_directory() && std::regex_match(name, match, pattern)) found.emplace_back(std::stoll(match[1]), entry.path());
  }
  std::sort(found.begin(), found.end());
  return found;
}

}  // namespace

// Verifies a checkpoint directory against its manifest; throws naming the first problem.
void verify_checkpoint(const std::string& dir) {
  fs::path root(dir);
  ACCEL_CHECK(fs::is_directory(root), dir, ": no such checkpoint directory");
  ACCEL_CHECK(fs::exists(root / kManifest), dir, ": incomplete checkpoint (no ", kManifest,
              "); it was not fully written");
  nlohmann::json manifest = read_json(root / kManifest);
  ACCEL_CHECK(manifest.value("format", "") == kFormat, dir, ": unknown checkpoint format \"",
              manifest.value("format", ""), "\" (expected ", kFormat, ")");
  for (auto& [name, digest] : manifest.at("files").items()) {
    fs::path file = root / name;
    ACCEL_CHECK(fs::exists(file), dir, ": file ", name, " listed in the manifest is missing");
    ACCEL_CHECK(sha256_of(file) == digest.get<std::string>(), dir, ": checksum mismatch for ", name,
                " (the file is corrupt or was changed after saving)");
  }
}

std::string Accelerator::next_checkpoint_dir() {
  ProjectConfiguration& project = options_.project_config;
  ACCEL_CHECK(!project.project_dir.empty(), "save_state: no directory given and no project_dir configured");
  fs::path checkpoints = fs::path(project.project_dir) / "checkpoints";
  // After a resume from an explicit directory the counter may lag the directories already
  // there; never reuse (and let total_limit delete) a newer name.
  for (const auto& [n, path] : numbered_checkpoints(checkpoints)) project.iteration = std::max(project.iteration, n + 1);
  return (checkpoints / ("checkpoint_" + std::to_string(project.iteration))).string();
}

std::string Accelerator::save_state(const std::string& requested_dir) {
  bool automatic = requested_dir.empty();
  ACCEL_CHECK(!automatic || options_.project_config.automatic_checkpoint_naming,
              "save_state: no directory given; pass one or enable automatic_checkpoint_naming");
  std::string dir = automatic ? next_checkpoint_dir() : requested_dir;
  fs::path final_dir(dir);
  fs::path staging = final_dir;
  staging += ".incomplete";
  if (is_main_process()) {
    fs::remove_all(staging);
    fs::create_directories(staging);
  }
  wait_for_everyone();

  NoGradGuard no_grad;
  if (zero_) {
    const std::string rank = std::to_string(process_index());
    safetensors::save((staging / ("zero_model_rank_" + rank + ".safetensors")).string(), zero_->parameter_shards());
    nn::OptimizerState state = optimizers_[0]->optimizer().state_dict();
    safetensors::save((staging / ("optimizer_rank_" + rank + ".safetensors")).string(), state.tensors);
    write_json(staging / ("optimizer_rank_" + rank + ".json"), state.meta);
    if (is_main_process()) write_json(staging / "zero.json", zero_->layout());
  }
  if (is_main_process()) {
    for (size_t i = 0; i < models_.size() && !zero_; ++i) {
      safetensors::save((staging / indexed("model", i, ".safetensors")).string(), models_[i]->state_dict(),
                        {{"format", "pt"}});
    }
    for (size_t i = 0; i < optimizers_.size() && !zero_; ++i) {
      nn::OptimizerState state = optimizers_[i]->optimizer().state_dict();
      safetensors::save((staging / indexed("optimizer", i, ".safetensors")).string(), state.tensors);
      write_json(staging / indexed("optimizer", i, ".json"), state.meta);
    }
    for (size_t i = 0; i < schedulers_.size(); ++i) {
      write_json(staging / indexed("scheduler", i, ".json"), schedulers_[i]->scheduler().state_dict());
    }
    if (scaler_) write_json(staging / "scaler.json", scaler_->state_dict());
    nlohmann::json loaders = nlohmann::json::array();
    for (auto& loader : loaders_) {
      data::DataLoader& l = loader->loader();
      // A loader that finished its epoch resumes at the start of the next one.
      bool finished = l.batches_yielded() >= l.size();
      loaders.push_back({{"epoch", finished ? l.epoch() + 1 : l.epoch()},
                         {"batches_yielded", finished ? 0 : l.batches_yielded()}});
    }
    write_json(staging / "dataloader.json", loaders);
    for (size_t i = 0; i < custom_objects_.size(); ++i) {
      safetensors::save((staging / ("custom_checkpoint_" + std::to_string(i) + ".safetensors")).string(),
                        custom_objects_[i]->state_tensors());
      write_json(staging / ("custom_checkpoint_" + std::to_string(i) + ".json"), custom_objects_[i]->state_json());
    }
    write_json(staging / "accelerator.json", {{"step", accumulation_step_}, {"num_processes", num_processes()},
                                              {"mixed_precision", options_.mixed_precision}});
  }
  Generator& generator = default_generator();
  write_json(staging / ("random_states_" + std::to_string(process_index()) + ".json"),
             {{"seed", generator.seed()}, {"offset", generator.offset()}});
  wait_for_everyone();

  if (is_main_process()) {
    write_json(staging / kManifest, {{"format", kFormat}, {"files", checksums(staging)}});
    fsync_path(staging, true);
    // Put the complete staging dir in place in one atomic step: a plain rename when the name
    // is free, else an exchange with the older checkpoint (renameat2 RENAME_EXCHANGE), which
    // is then removed. At every instant the name holds one complete checkpoint.
    if (fs::exists(final_dir)) {
      ACCEL_CHECK(::renameat2(AT_FDCWD, staging.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) == 0,
                  final_dir.string(), ": cannot swap in the new checkpoint: ", std::strerror(errno));
      fs::remove_all(staging);  // now the previous checkpoint
    } else {
      fs::rename(staging, final_dir);
    }
    fsync_path(final_dir.parent_path().empty() ? fs::path(".") : final_dir.parent_path(), true);
    if (automatic) {
      ProjectConfiguration& project = options_.project_config;
      project.iteration += 1;
      if (project.total_limit) {
        // Keep the newest total_limit checkpoint_N directories.
        std::vector<std::pair<int64_t, fs::path>> existing = numbered_checkpoints(final_dir.parent_path());
        while (static_cast<int64_t>(existing.size()) > *project.total_limit) {
          fs::remove_all(existing.front().second);
          existing.erase(existing.begin());
        }
      }
    }
  }
  wait_for_everyone();
  if (automatic && !is_main_process()) options_.project_config.iteration += 1;
  return dir;
}

void Accelerator::load_state(const std::string& requested_dir) {
  std::string dir = requested_dir;
  if (dir.empty()) {
    // The newest complete automatic checkpoint.
    fs::path checkpoints = fs::path(options_.project_config.project_dir) / "checkpoints";
    ACCEL_CHECK(!options_.project_config.project_dir.empty() && fs::is_directory(checkpoints),
                "load_state: no directory given and no checkpoints under project_dir");
    std::vector<std::pair<int64_t, fs::path>> existing = numbered_checkpoints(checkpoints);
    int64_t newest = existing.empty() ? -1 : existing.back().first;
    ACCEL_CHECK(newest >= 0, "load_state: no checkpoint_N directory under ", checkpoints.string());
    dir = (checkpoints / ("checkpoint_" + std::to_string(newest))).string();
    options_.project_config.iteration = newest + 1;
  }
  verify_checkpoint(dir);
  fs::path root(dir);
  nlohmann::json accelerator_meta = read_json(root / "accelerator.json");
  ACCEL_CHECK(accelerator_meta.value("num_processes", 1) == num_processes(), dir, ": saved by ",
              accelerator_meta.value("num_processes", 1), " processes but loading with ", num_processes());

  ACCEL_CHECK(fs::exists(root / "zero.json") == (zero_ != nullptr), dir, ": ",
              zero_ ? "was not saved under ZeRO, but this run uses ZeRO stage " + std::to_string(zero_->stage())
                    : std::string("holds ZeRO shards, but this run does not use ZeRO (consolidate them with "
                                  "`accel merge-weights` and load the weights)"));
  if (zero_) {
    const std::string rank = std::to_string(process_index());
    zero_->load_parameter_shards(safetensors::load((root / ("zero_model_rank_" + rank + ".safetensors")).string()).tensors,
                                 read_json(root / "zero.json"));
    nn::OptimizerState state;
    state.tensors = safetensors::load((root / ("optimizer_rank_" + rank + ".safetensors")).string()).tensors;
    state.meta = read_json(root / ("optimizer_rank_" + rank + ".json"));
    optimizers_[0]->optimizer().load_state_dict(state);
  }
  for (size_t i = 0; i < models_.size() && !zero_; ++i) {
    fs::path file = root / indexed("model", i, ".safetensors");
    try {
      models_[i]->load_state_dict(safetensors::load(file.string()).tensors, /*strict=*/true);
    } catch (const Error& e) {
      ACCEL_FAIL(dir, ": the checkpoint's model does not match the prepared model (", file.filename().string(), "): ",
                 e.what());
    }
  }
  for (size_t i = 0; i < optimizers_.size() && !zero_; ++i) {
    nn::OptimizerState state;
    state.tensors = safetensors::load((root / indexed("optimizer", i, ".safetensors")).string()).tensors;
    state.meta = read_json(root / indexed("optimizer", i, ".json"));
    optimizers_[i]->optimizer().load_state_dict(state);
  }
  for (size_t i = 0; i < schedulers_.size(); ++i) {
    schedulers_[i]->scheduler().load_state_dict(read_json(root / indexed("scheduler", i, ".json")));
  }
  if (scaler_) scaler_->load_state_dict(read_json(root / "scaler.json"));
  nlohmann::json loaders = read_json(root / "dataloader.json");
  ACCEL_CHECK(loaders.size() == loaders_.size(), dir, ": holds ", loaders.size(), " data loader positions but ",
              loaders_.size(), " loaders are prepared");
  for (size_t i = 0; i < loaders_.size(); ++i) {
    loaders_[i]->resume_at(loaders[i].at("epoch").get<int64_t>(), loaders[i].at("batches_yielded").get<int64_t>());
  }
  for (size_t i = 0; i < custom_objects_.size(); ++i) {
    std::string stem = "custom_checkpoint_" + std::to_string(i);
    custom_objects_[i]->load_state(safetensors::load((root / (stem + ".safetensors")).string()).tensors,
                                   read_json(root / (stem + ".json")));
  }
  nlohmann::json rng = read_json(root / ("random_states_" + std::to_string(process_index()) + ".json"));
  default_generator().set_state(rng.at("seed").get<uint64_t>(), rng.at("offset").get<uint64_t>());
  accumulation_step_ = accelerator_meta.at("step").get<int64_t>();
}

void Accelerator::register_for_checkpointing(std::shared_ptr<Checkpointable> object) {
  custom_objects_.push_back(std::move(object));
}

void Accelerator::save_model(const nn::Module& model, const std::string& dir, int64_t max_shard_size) {
  ACCEL_CHECK(max_shard_size > 0, "save_model: max_shard_size must be positive");
  std::map<std::string, Tensor> state = get_state_dict(model);  // collective under ZeRO stage 3
  if (!is_main_process()) return;
  fs::create_directories(dir);
  // Greedy shards in name order, as transformers' shard_checkpoint.
  std::vector<std::map<std::string, Tensor>> shards(1);
  int64_t shard_bytes = 0;
  for (auto& [name, tensor] : state) {
    int64_t bytes = static_cast<int64_t>(tensor.nbytes());
    if (shard_bytes > 0 && shard_bytes + bytes > max_shard_size) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back()[name] = tensor;
    shard_bytes += bytes;
  }
  if (shards.size() == 1) {
    safetensors::save((fs::path(dir) / "model.safetensors").string(), shards[0], {{"format", "pt"}});
    return;
  }
  nlohmann::json weight_map = nlohmann::json::object();
  int64_t total = 0;
  for (size_t i = 0; i < shards.size(); ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    safetensors::save((fs::path(dir) / name).string(), shards[i], {{"format", "pt"}});
    for (auto& [tensor_name, tensor] : shards[i]) {
      weight_map[tensor_name] = name;
      total += static_cast<int64_t>(tensor.nbytes());
    }
  }
  write_json(fs::path(dir) / "model.safetensors.index.json",
             {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}});
}

}  // namespace accel
