/// @file
/// ZeRO, the Zero Redundancy Optimizer (Rajbhandari et al., 2020), with DeepSpeed's semantics:
/// data parallelism in which each of the N processes keeps only 1/N of the model states.
///
///   stage 1  optimizer state sharded: after backward, gradients are reduce-scattered, each
///            process updates its shard (fp32 masters, Adam m and v), then all-gathers the
///            updated parameters.
///   stage 2  gradients sharded too: each bucket is reduce-scattered during backward, as soon
///            as it fills, and the gradient of a parameter a process does not own is freed.
///   stage 3  parameters sharded too: a layer's parameters are all-gathered just before its
///            forward and again before its backward, and released after each; the next
///            layer's gather is started early (prefetch) so it overlaps compute.
///
/// Partitioning is per parameter, flat and padded: a parameter of n elements is cut into N
/// chunks of ceil(n / N); rank r owns elements [r * chunk, (r + 1) * chunk) of its flattened
/// value (fewer, or none, at the end). Any parameter count works with any world size, and one
/// bucket's collective moves every parameter's chunk at once (the buffers are rank-major:
/// chunk r of each parameter in the bucket, then chunk r + 1 of each, ...).
///
/// The user's optimizer is kept (so its scheduler keeps working): its parameter groups are
/// given the owned shards in place of the full parameters, before it ever steps. Stages 1-2
/// make each shard a view of the owned slice of the full parameter, so the fp32 parameters
/// themselves are the masters; stage 3 gives each shard its own memory.
///
/// Per process, for Ψ parameters in fp32 with Adam (p = g = 4 bytes, K = 8 bytes of state):
///   stage 1: (p + g)Ψ + KΨ/N    stage 2: pΨ + (g + K)Ψ/N    stage 3: (p + g + K)Ψ/N
/// memory_report() measures what this process really holds, to compare with
/// zero_model_state_memory() (distributed/memory_estimate.h).
///
/// It runs on CPU tensors only (MPI or single-process group): it packs shards into bucket
/// buffers with host memcpy and keeps small flags on the CPU. On a CUDA device the Accelerator
/// refuses zero_stage >= 1 up front; CUDA shards over NCCL are not done yet.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "distributed/memory_estimate.h"
#include "distributed/process_group.h"
#include "nn/module.h"
#include "nn/optim.h"

namespace accel::distributed {

struct ZeroOptions {
  int stage = 1;                             ///< 1, 2 or 3
  int64_t bucket_bytes = 25 * 1024 * 1024;   ///< of full gradients per reduce-scatter (stages 1-2: also per all-gather)
  bool prefetch = true;                      ///< stage 3: gather the next layer while this one computes
};

class ZeroEngine {
 public:
  /// Broadcasting the initial weights is the caller's job (Accelerator::prepare does it
  /// first). Collective: every process must construct it, with the same model.
  ZeroEngine(nn::Module& model, nn::Optimizer& optimizer, std::shared_ptr<ProcessGroup> group, ZeroOptions options);
  ~ZeroEngine();
  ZeroEngine(const ZeroEngine&) = delete;
  ZeroEngine& operator=(const ZeroEngine&) = delete;

  int stage() const;
  int64_t num_buckets() const;

  /// false inside gradient accumulation: stage 1 then leaves gradients local, accumulating in
  /// .grad (DDP's no_sync). Stages 2-3 reduce-scatter every micro-step regardless, since no
  /// process keeps whole gradients to accumulate in (DeepSpeed does the same).
  void set_require_backward_grad_sync(bool sync);

  /// After the optimizer stepped on the shards: stages 1-2 all-gather the updated shards into
  /// every process's full parameters (stage 3 gathers on the next use).
  void after_optimizer_step();
  /// Drops every gradient: the shards' and the full parameters'.
  void zero_grad();
  /// torch.nn.utils.clip_grad_norm_ over the shards: the norm is over all processes.
  double clip_grad_norm_(double max_norm, double norm_type = 2.0);

  /// What this process holds now (to compare with zero_model_state_memory()).
  ModelStateMemory memory_report() const;

  /// The model's full state dict (parameters and buffers, HF names), copies. Collective under
  /// stage 3, where it gathers every layer; every process gets it.
  std::map<std::string, Tensor> full_state_dict();

  /// ---- checkpoints ----
  /// The partition: stage, world size, and each parameter's name, shape and chunk size.
  nlohmann::json layout() const;
  /// This process's shard of every parameter, padded to its chunk size (stage 3's weights).
  std::map<std::string, Tensor> parameter_shards() const;
  /// Restores parameter_shards() saved by this rank under the same layout.
  void load_parameter_shards(const std::map<std::string, Tensor>& shards, const nlohmann::json& layout);

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;  ///< hooks hold it weakly
};

/// Consolidates every rank's parameter_shards() (index = rank) into full parameters, by the
/// layout (accel merge-weights). Checks that the shards fit the layout.
std::map<std::string, Tensor> merge_parameter_shards(const nlohmann::json& layout,
                                                     const std::vector<std::map<std::string, Tensor>>& shards);

}  // namespace accel::distributed
