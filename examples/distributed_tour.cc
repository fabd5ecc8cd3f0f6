// Data parallelism and ZeRO, quoted by docs/distributed.md: a tiny BERT classifier (random
// weights, 2 layers, hidden 32) trains on synthetic token data with gradient accumulation,
// first under DDP, then under ZeRO stage 3 from the same seed. The program prints DDP's
// buckets, each rank's model-state bytes under ZeRO beside the paper's formula, saves a
// sharded checkpoint, resumes from it in a fresh Accelerator, and merges the shards into full
// weights. Its CHECKs pin what the docs state: ZeRO-3 trains the same model as DDP, each rank
// holds about half of it, the resume restores it exactly, the merge equals the gathered
// weights. No data or download needed; about a second on 2 ranks (CTest example_distributed_tour).
//
//   mpirun -np 2 build/bin/example_distributed_tour [WORK_DIR]   (one process also works)
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>

#include "accelerate/accelerator.h"
#include "core/safetensors.h"
#include "distributed/memory_estimate.h"
#include "distributed/zero.h"
#include "models/bert.h"

using namespace accel;
namespace fs = std::filesystem;

namespace {

// 64 sequences of 5..16 random token ids, the same on every rank; the label says whether the
// first token id is odd, so there is something to learn.
std::shared_ptr<const std::vector<data::Features>> synthetic_features() {
  std::mt19937_64 rng(99);
  auto features = std::make_shared<std::vector<data::Features>>();
  for (int i = 0; i < 64; ++i) {
    data::Features f;
    int64_t length = 5 + static_cast<int64_t>(rng() % 12);
    for (int64_t t = 0; t < length; ++t) {
      f.input_ids.push_back(1 + static_cast<int64_t>(rng() % 98));
      f.token_type_ids.push_back(0);
    }
    f.label = static_cast<double>(f.input_ids.front() % 2);
    features->push_back(std::move(f));
  }
  return features;
}

// Dropout off, so that the DDP and ZeRO runs draw no random numbers after the weights.
models::BertConfig tiny_bert() {
  models::BertConfig c;
  c.vocab_size = 99;
  c.hidden_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.intermediate_size = 37;
  c.max_position_embeddings = 64;
  c.hidden_dropout_prob = 0.0;
  c.attention_probs_dropout_prob = 0.0;
  return c;
}

struct Prepared {
  std::shared_ptr<models::BertForSequenceClassification> model;
  std::shared_ptr<AcceleratedOptimizer> optimizer;
  std::shared_ptr<PreparedDataLoader> batches;
};

// [snippet:prepare]
Prepared prepare_training(Accelerator& accelerator) {
  auto model = std::make_shared<models::BertForSequenceClassification>(tiny_bert());  // same weights on every rank
  auto loader = std::make_shared<data::DataLoader>(
      synthetic_features(), data::DataLoaderOptions{.batch_size = 4, .shuffle = true, .seed = 7});
  auto adamw = std::make_shared<nn::AdamW>(nn::decay_groups(*model, 1e-3, 0.01), nn::AdamWOptions{.lr = 1e-3});
  Prepared run;
  std::tie(run.model, run.optimizer, run.batches) = accelerator.prepare(model, adamw, loader);
  return run;
}
// [end]

struct Trained {
  std::vector<float> losses;              // this rank's, per micro-batch
  distributed::ModelStateMemory held;     // under ZeRO: what this rank held after its last optimizer step
};

// [snippet:train]
Trained train(Accelerator& accelerator, Prepared& run, int64_t epochs) {
  Trained trained;
  while (run.batches->next_epoch() < epochs) {
    for (auto& batch : *run.batches) {  // this rank's batches: r, r + N, r + 2N, ...
      auto scope = accelerator.accumulate(*run.model);  // sync_gradients() on every 2nd batch
      Tensor loss =
          run.model->forward(batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.labels).loss;
      trained.losses.push_back(loss.item<float>());
      accelerator.backward(loss);  // averages over the ranks: DDP on syncing batches, ZeRO-3 on all
      if (accelerator.sync_gradients()) accelerator.clip_grad_norm_(run.model->parameters(), 1.0);
      run.optimizer->step();  // does nothing on the batches that only accumulate
      if (accelerator.zero() != nullptr && accelerator.sync_gradients()) {
        trained.held = accelerator.zero()->memory_report();  // before zero_grad frees the gradients
      }
      run.optimizer->zero_grad();
    }
  }
  return trained;
}
// [end]

// The largest, over tensors, of max|a - b| / max|b|.
double max_relative_difference(const std::map<std::string, Tensor>& a, const std::map<std::string, Tensor>& b) {
  double worst = 0;
  for (const auto& [name, tensor] : b) {
    double scale = std::max(tensor.abs().max().item<double>(), 1e-12);
    worst = std::max(worst, (a.at(name) - tensor).abs().max().item<double>() / scale);
  }
  return worst;
}

}  // namespace

int main(int argc, char** argv) {
  const fs::path work = argc > 1 ? fs::path(argv[1]) : fs::temp_directory_path() / "accel_distributed_tour";
  int failures = 0;
  try {
    // [snippet:ddp]
    AcceleratorOptions options;
    options.cpu = true;                       // MPI on the CPU, even where GPUs exist (ZeRO below needs it)
    options.seed = 1234;                      // the weights: the same draw on every rank
    options.gradient_accumulation_steps = 2;  // average gradients over the ranks every 2nd batch
    options.ddp.bucket_bytes = 16 * 1024;     // 16 KB buckets, so this tiny model gets several
    Accelerator accelerator(options);         // under mpirun: one rank per process
    Prepared ddp = prepare_training(accelerator);
    Trained ddp_trained = train(accelerator, ddp, /*epochs=*/2);
    if (const distributed::DistributedDataParallel* reducer = accelerator.ddp_of(*ddp.model)) {  // null on 1 process
      for (const distributed::BucketTiming& bucket : reducer->last_bucket_timings()) {
        accelerator.print("bucket of ", bucket.num_parameters, " parameters, ", bucket.bytes, " bytes: all_reduce ",
                          bucket.communication_seconds * 1e3, " ms, ", bucket.overlapped_seconds * 1e3,
                          " ms of it during backward");
      }
    }
    // [end]
    auto check = [&](bool ok, const std::string& claim) {
      if (!ok) {
        std::cerr << "rank " << accelerator.process_index() << ": CHECK FAILED: " << claim << "\n";
        ++failures;
      }
    };
    const int world = accelerator.num_processes();
    check(world == 1 || (accelerator.ddp_of(*ddp.model) != nullptr &&
                         accelerator.ddp_of(*ddp.model)->last_bucket_timings().size() >= 2),
          "16 KB buckets cut the tiny BERT into several");
    if (accelerator.is_main_process()) fs::remove_all(work);
    accelerator.wait_for_everyone();

    // [snippet:zero]
    AcceleratorOptions zero_options = options;
    zero_options.zero_stage = 3;  // what `accel launch --zero_stage 3` sets, as ACCEL_ZERO_STAGE
    Accelerator zero_accelerator(zero_options);
    Prepared zero = prepare_training(zero_accelerator);  // AdamW now keeps m and v of this rank's shards only
    Trained zero_trained = train(zero_accelerator, zero, /*epochs=*/2);
    // [end]
    double loss_difference = 0;
    for (size_t i = 0; i < ddp_trained.losses.size(); ++i) {
      loss_difference = std::max(loss_difference, std::abs(double(zero_trained.losses[i]) - ddp_trained.losses[i]) /
                                                      std::abs(double(ddp_trained.losses[i])));
    }
    zero_accelerator.print(ddp_trained.losses.size(), " batches per rank; loss ", ddp_trained.losses.front(),
                           " -> ", ddp_trained.losses.back(),
                           "; largest relative difference between DDP's and ZeRO-3's losses: ", loss_difference);
    // Rounding level: Adam all but hides a wrong gradient scale (a sum instead of the average
    // in ZeRO's reduce-scatter moves these losses by only 2e-5).
    check(zero_trained.losses.size() == ddp_trained.losses.size() && loss_difference <= 1e-6,
          "ZeRO-3 trains the same model as DDP");

    // [snippet:memory]
    distributed::ModelStateMemory formula = distributed::zero_model_state_memory(
        zero.model->num_parameters(), world, /*zero_stage=*/3, distributed::adam_state_bytes("fp32"));
    const distributed::ModelStateMemory& held = zero_trained.held;
    Tensor mine = from_vector<int64_t>({held.parameter_bytes, held.gradient_bytes, held.optimizer_bytes}, {1, 3});
    std::vector<int64_t> every_rank = zero_accelerator.gather(mine).to_vector<int64_t>();  // [N, 3]
    for (int r = 0; r < world; ++r) {
      zero_accelerator.print("rank ", r, " holds ", every_rank[3 * r], " bytes of parameters, ",
                             every_rank[3 * r + 1], " of gradients, ", every_rank[3 * r + 2],
                             " of optimizer state");
    }
    zero_accelerator.print("formula for ", zero.model->num_parameters(), " parameters on ", world, " ranks: ",
                           formula.parameter_bytes, " / ", formula.gradient_bytes, " / ", formula.optimizer_bytes);
    // [end]
    auto near_formula = [](int64_t measured, int64_t expected) {
      return std::abs(static_cast<double>(measured - expected)) <= 0.05 * static_cast<double>(expected);
    };
    check(near_formula(held.parameter_bytes, formula.parameter_bytes) &&
              near_formula(held.gradient_bytes, formula.gradient_bytes) &&
              near_formula(held.optimizer_bytes, formula.optimizer_bytes),
          "each rank holds its share of the model state, within 5% of the formula");

    // [snippet:save]
    const fs::path checkpoint = work / "checkpoint";
    zero_accelerator.save_state(checkpoint.string());  // collective: each rank writes its shards
    std::map<std::string, Tensor> weights = zero_accelerator.get_state_dict(*zero.model);  // collective: gathers
    // [end]

    // [snippet:resume]
    Accelerator resumed_accelerator(zero_options);  // same stage, same number of ranks
    Prepared resumed = prepare_training(resumed_accelerator);
    resumed_accelerator.load_state(checkpoint.string());
    double resume_difference = max_relative_difference(resumed_accelerator.get_state_dict(*resumed.model), weights);
    resumed_accelerator.print("resumed weights differ from the saved ones by ", resume_difference);
    // [end]
    check(resume_difference == 0.0, "load_state restores the sharded weights exactly");

    // [snippet:merge]
    nlohmann::json layout = nlohmann::json::parse(std::ifstream(checkpoint / "zero.json"));
    std::vector<std::map<std::string, Tensor>> shards;
    for (int r = 0; r < layout["world_size"].get<int>(); ++r) {
      shards.push_back(
          safetensors::load((checkpoint / ("zero_model_rank_" + std::to_string(r) + ".safetensors")).string()).tensors);
    }
    std::map<std::string, Tensor> merged = distributed::merge_parameter_shards(layout, shards);
    int64_t equal_tensors = 0;
    for (const auto& [name, tensor] : merged) {
      equal_tensors += (tensor - weights.at(name)).abs().max().item<double>() == 0;
    }
    zero_accelerator.print("merged ", merged.size(), " tensors from ", shards.size(), " shards; ", equal_tensors,
                           " equal the gathered weights");
    // [end]
    check(!merged.empty() && equal_tensors == static_cast<int64_t>(merged.size()),
          "the merged shards equal the gathered weights");
    zero_accelerator.wait_for_everyone();
    if (zero_accelerator.is_main_process()) fs::remove_all(work);
    if (failures > 0) return 1;
    zero_accelerator.print("distributed_tour: all checks passed");
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
