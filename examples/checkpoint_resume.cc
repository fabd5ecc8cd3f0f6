// Checkpoints, quoted by docs/checkpoints.md: a tiny BERT classifier (random weights, 2
// layers, hidden 32) trains on synthetic token data with dropout on, saves a checkpoint every
// 3 steps under automatic naming with total_limit 2, and a second, fresh run resumes from the
// checkpoint taken mid-epoch and reproduces the first run's losses bit for bit. Then a
// corrupted copy is rejected. No data or download needed; runs in about a second.
//
//   build/bin/example_checkpoint_resume [WORK_DIR]
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <set>

#include "accelerate/accelerator.h"
#include "models/bert.h"

using namespace accel;
namespace fs = std::filesystem;

namespace {

// 26 sequences of 5..16 random token ids with random labels; fixed by the seed.
std::shared_ptr<const std::vector<data::Features>> synthetic_features() {
  std::mt19937_64 rng(99);
  auto features = std::make_shared<std::vector<data::Features>>();
  for (int i = 0; i < 26; ++i) {
    data::Features f;
    int64_t length = 5 + static_cast<int64_t>(rng() % 12);
    for (int64_t t = 0; t < length; ++t) {
      f.input_ids.push_back(1 + static_cast<int64_t>(rng() % 98));
      f.token_type_ids.push_back(0);
    }
    f.label = static_cast<double>(rng() % 2);
    features->push_back(std::move(f));
  }
  return features;
}

models::BertConfig tiny_bert() {
  models::BertConfig c;
  c.vocab_size = 99;
  c.hidden_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.intermediate_size = 37;
  c.max_position_embeddings = 64;  // dropout stays at BERT's 0.1, so the RNG state matters
  return c;
}

// [snippet:setup]
struct Run {
  std::unique_ptr<Accelerator> accelerator;
  std::shared_ptr<models::BertForSequenceClassification> model;
  std::shared_ptr<AcceleratedOptimizer> optimizer;
  std::shared_ptr<PreparedDataLoader> loader;
  std::shared_ptr<AcceleratedScheduler> scheduler;
};

Run make_run(const std::string& project_dir) {
  AcceleratorOptions options;
  options.seed = 1234;  // weights, dropout masks: the Philox stream starts at (1234, 0)
  options.project_config.project_dir = project_dir;
  options.project_config.automatic_checkpoint_naming = true;  // save_state() -> checkpoints/checkpoint_N
  options.project_config.total_limit = 2;                     // keep the newest two
  Run run;
  run.accelerator = std::make_unique<Accelerator>(options);
  auto model = std::make_shared<models::BertForSequenceClassification>(tiny_bert());
  auto loader = std::make_shared<data::DataLoader>(
      synthetic_features(), data::DataLoaderOptions{.batch_size = 4, .shuffle = true, .seed = 7});  // 7 batches
  auto optimizer = std::make_shared<nn::AdamW>(model->parameters(), nn::AdamWOptions{.lr = 1e-3});
  auto scheduler = std::make_shared<nn::LRScheduler>(nn::linear_schedule_with_warmup(*optimizer, 3, 14));
  std::tie(run.model, run.optimizer, run.loader, run.scheduler) =
      run.accelerator->prepare(model, optimizer, loader, scheduler);
  return run;
}
// [end]

// [snippet:train]
// Trains from wherever the run stands to the end of epoch 2; returns the losses.
std::vector<float> train(Run& run, int64_t save_every) {
  std::vector<float> losses;
  int64_t step = run.loader->next_epoch() * run.loader->size() + run.loader->skip_pending();
  for (int64_t epoch = run.loader->next_epoch(); epoch < 2; ++epoch) {
    run.model->train();
    for (auto& batch : *run.loader) {  // resumes mid-epoch after load_state
      auto scope = run.accelerator->accumulate(*run.model);
      Tensor loss = run.model->forward(batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.labels).loss;
      losses.push_back(loss.item<float>());
      run.accelerator->backward(loss);
      run.optimizer->step();
      run.scheduler->step();
      run.optimizer->zero_grad();
      if (save_every > 0 && ++step % save_every == 0) {
        std::cout << "step " << step << ": saved " << run.accelerator->save_state() << "\n";
      }
    }
  }
  return losses;
}
// [end]

}  // namespace

int main(int argc, char** argv) {
  fs::path work = argc > 1 ? fs::path(argv[1])
                           : fs::temp_directory_path() / ("accel_checkpoint_resume_" + std::to_string(::getpid()));
  fs::remove_all(work);
  std::cout << std::boolalpha;
  int failures = 0;
  auto check = [&](bool ok, const char* claim) {
    if (!ok) {
      std::cerr << "CHECK FAILED: " << claim << "\n";
      ++failures;
    }
  };
  try {
    // [snippet:first_run]
    Run first = make_run((work / "first").string());
    std::vector<float> losses = train(first, /*save_every=*/3);  // 14 steps: saves after 3, 6, 9, 12
    std::set<std::string> kept;
    for (const auto& entry : fs::directory_iterator(work / "first" / "checkpoints")) {
      kept.insert(entry.path().filename());
    }
    for (const std::string& name : kept) std::cout << "kept " << name << "\n";  // checkpoint_2, checkpoint_3
    // [end]
    check(losses.size() == 14, "two epochs of 7 batches");
    check(fs::exists(work / "first/checkpoints/checkpoint_2") && fs::exists(work / "first/checkpoints/checkpoint_3") &&
              !fs::exists(work / "first/checkpoints/checkpoint_1"),
          "total_limit keeps the newest two");

    // [snippet:files]
    fs::path checkpoint = work / "first" / "checkpoints" / "checkpoint_2";  // after step 9: epoch 1, batch 2 of 7
    verify_checkpoint(checkpoint.string());  // every file present, every SHA-256 equal
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(checkpoint)) files.push_back(entry.path());
    std::sort(files.begin(), files.end());
    for (const fs::path& file : files) {
      std::cout << "  " << file.filename().string() << " (" << fs::file_size(file) << " bytes)\n";
    }
    for (const char* name : {"dataloader.json", "random_states_0.json", "scheduler.json", "accelerator.json",
                             "accel_checkpoint.json"}) {
      std::ifstream in(checkpoint / name);
      std::cout << name << ": " << nlohmann::json::parse(in).dump() << "\n";
    }
    // [end]

    // [snippet:resume]
    Run second = make_run((work / "second").string());  // fresh weights, optimizer, RNG and loader
    second.accelerator->load_state(checkpoint.string());
    std::vector<float> tail = train(second, /*save_every=*/0);  // steps 10..14
    bool bit_exact = tail.size() == 5 && std::memcmp(tail.data(), losses.data() + 9, 5 * sizeof(float)) == 0;
    std::cout << "resumed losses equal the uninterrupted run's, bit for bit: " << bit_exact << "\n";
    // [end]
    check(bit_exact, "resume is bit-exact");

    // [snippet:corrupt]
    fs::path copy = work / "corrupt";
    fs::copy(checkpoint, copy);
    {
      std::fstream model(copy / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
      model.seekg(-1, std::ios::end);
      char last = static_cast<char>(model.get());
      model.seekp(-1, std::ios::end);
      model.put(static_cast<char>(last ^ 0x5a));  // flip bits in one byte of one weight
    }
    try {
      second.accelerator->load_state(copy.string());
    } catch (const Error& e) {
      std::cout << e.what() << "\n";  // checksum mismatch for model.safetensors
    }
    // [end]
    check(std::string([&] {
            try {
              verify_checkpoint(copy.string());
            } catch (const Error& e) {
              return std::string(e.what());
            }
            return std::string();
          }()).find("checksum mismatch for model.safetensors") != std::string::npos,
          "a corrupted file is rejected");
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    fs::remove_all(work);
    return 1;
  }
  fs::remove_all(work);
  if (failures > 0) return 1;
  std::cout << "checkpoint_resume: all checks passed\n";
  return 0;
}
