/// @file
/// Accelerator: Hugging Face Accelerate's API in C++. A training program written against it
/// runs on one process or many, in fp32, bf16 or fp16, with gradient accumulation and exact
/// checkpoints, without changing a line; `accel launch` sets the ACCEL_* environment that
/// the options default to.
///
/// @code
/// accel::Accelerator accelerator({.mixed_precision = "bf16"});
/// auto [model, optimizer, loader, scheduler] = accelerator.prepare(model, optimizer, loader, scheduler);
/// for (auto& batch : *loader) {
///   auto scope = accelerator.accumulate(*model);
///   auto autocast = accelerator.autocast();
///   Tensor loss = model->forward(batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.labels).loss;
///   accelerator.backward(loss);
///   optimizer->step(); scheduler->step(); optimizer->zero_grad();
/// }
/// @endcode
#pragma once

#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "accelerate/data.h"
#include "accelerate/grad_scaler.h"
#include "accelerate/trackers.h"
#include "core/autocast.h"
#include "distributed/ddp.h"
#include "distributed/process_group.h"
#include "distributed/zero.h"
#include "nn/optim.h"
#include "nn/schedule.h"

namespace accel {

struct ProjectConfiguration {
  std::string project_dir;                    ///< root of checkpoints/ and logs
  std::string logging_dir;                    ///< default: project_dir/logs
  bool automatic_checkpoint_naming = false;  ///< save_state() -> project_dir/checkpoints/checkpoint_N
  std::optional<int64_t> total_limit;         ///< keep at most this many automatic checkpoints
  int64_t iteration = 0;                      ///< the N of the next automatic checkpoint
};

struct AcceleratorOptions {
  std::string mixed_precision = "no";  // "no", "fp16", "bf16"
  int64_t gradient_accumulation_steps = 1;
  bool cpu = false;                    ///< stay on the CPU even where a GPU exists
  std::optional<uint64_t> seed;        ///< set_seed() at construction
  ProjectConfiguration project_config;
  std::vector<std::string> log_with;   ///< "jsonl", "tensorboard"
  bool even_batches = true;
  distributed::DDPOptions ddp;         ///< with several processes: bucket size, find_unused_parameters
  /// ZeRO stage 0 (plain data parallelism) to 3 (distributed/zero.h); it takes over from DDP
  /// once prepare() has seen the model and its optimizer. Its buckets are ddp.bucket_bytes.
  int zero_stage = 0;
  /// Fills unset options from ACCEL_MIXED_PRECISION, ACCEL_GRADIENT_ACCUMULATION_STEPS,
  /// ACCEL_USE_CPU, ACCEL_SEED, ACCEL_PROJECT_DIR, ACCEL_LOG_WITH, ACCEL_ZERO_STAGE (what
  /// `accel launch` sets) and ACCEL_DDP_BUCKET_MB.
  static AcceleratorOptions from_env(AcceleratorOptions base);
  static AcceleratorOptions from_env() { return from_env(AcceleratorOptions{}); }
};

/// Anything save_state should carry besides model/optimizer/scheduler/scaler/RNG.
class Checkpointable {
 public:
  virtual ~Checkpointable() = default;
  virtual std::map<std::string, Tensor> state_tensors() const { return {}; }
  virtual nlohmann::json state_json() const = 0;
  virtual void load_state(const std::map<std::string, Tensor>& tensors, const nlohmann::json& json) = 0;
};

class Accelerator;

/// Checks a save_state directory against its manifest (every file present, every SHA-256
/// equal); throws naming the first problem. An interrupted save never passes.
void verify_checkpoint(const std::string& dir);

/// The optimizer as prepare() returns it: step() and zero_grad() do nothing while gradients
/// accumulate; under fp16 step() unscales and skips on inf/NaN.
class AcceleratedOptimizer {
 public:
  AcceleratedOptimizer(std::shared_ptr<nn::Optimizer> optimizer, Accelerator& accelerator);
  void step();
  void zero_grad(bool set_to_none = true);
  nn::Optimizer& optimizer() { return *optimizer_; }
  std::vector<nn::ParamGroup>& param_groups() { return optimizer_->param_groups(); }

 private:
  std::shared_ptr<nn::Optimizer> optimizer_;
  Accelerator& accelerator_;
};

/// The scheduler as prepare() returns it: steps only when the optimizer really stepped, and
/// then once per process, because each optimizer step consumed num_processes batches
/// (Accelerate's rule when batches are not split: schedules are written in per-process
/// batches, so this keeps warm-up and decay on the same number of samples at any world size).
class AcceleratedScheduler {
 public:
  AcceleratedScheduler(std::shared_ptr<nn::LRScheduler> scheduler, Accelerator& accelerator);
  void step();
  std::vector<double> get_last_lr() const { return scheduler_->get_last_lr(); }
  nn::LRScheduler& scheduler() { return *scheduler_; }

 private:
  std::shared_ptr<nn::LRScheduler> scheduler_;
  Accelerator& accelerator_;
};

/// The data loader as prepare() returns it: sharded for this rank, batches already on the
/// device, each `for` loop one epoch (a new shuffle), and the end of the loop known to the
/// accelerator so the last batch of an epoch always synchronizes gradients.
class PreparedDataLoader {
 public:
  PreparedDataLoader(std::shared_ptr<data::DataLoader> loader, Accelerator& accelerator);

  class Iterator {
   public:
    using value_type = data::Batch;
    Iterator() = default;
    Iterator(PreparedDataLoader* owner);
    data::Batch& operator*() { return *current_; }
    data::Batch* operator->() { return &*current_; }
    Iterator& operator++();
    bool operator==(const Iterator& other) const { return current_.has_value() == other.current_.has_value(); }

   private:
    void fetch();
    PreparedDataLoader* owner_ = nullptr;
    std::optional<data::Batch> current_;
  };
  Iterator begin();
  Iterator end() { return Iterator(); }
  int64_t size() const { return loader_->size(); }
  int64_t epoch() const { return next_epoch_ - 1; }
  int64_t next_epoch() const { return next_epoch_; }
  data::DataLoader& loader() { return *loader_; }
  /// The next `for` loop starts at this epoch, skipping this many batches (resume).
  void resume_at(int64_t epoch, int64_t skip_batches);
  int64_t skip_pending() const { return skip_next_; }

 private:
  friend class Accelerator;
  std::shared_ptr<data::DataLoader> loader_;
  Accelerator& accelerator_;
  int64_t next_epoch_ = 0;
  int64_t skip_next_ = 0;
};

/// Device and process group, chosen as Hugging Face Accelerate chooses them (the GPU of the
/// process's local rank, NCCL between GPU processes):
///   - options.cpu, a build without CUDA, or no visible GPU: the CPU and
///     distributed::make_default_group() (MPI under mpirun, else one process).
///   - otherwise cuda:L for the local rank L (LOCAL_RANK, else OMPI_COMM_WORLD_LOCAL_RANK, else
///     MPI's node-local rank; accelerate/device_choice.h), made the current device. A job of
///     several processes (mpirun, or RANK/WORLD_SIZE with a rendezvous) gets
///     distributed::make_nccl_group(), one process the single-process group. The small
///     tensors the Accelerator and DDP exchange (padding counts, inf flags, model fingerprints)
///     travel over that same group, on the device: there is no second, CPU group.
///   - a group passed in, or one named by ACCEL_BACKEND, wins, and the device follows it: CUDA
///     where its collectives take CUDA tensors (nccl, single), the CPU for MPI.
/// ZeRO (zero_stage 1-3) runs on the CPU only for now: on a CUDA device the constructor throws.
class Accelerator {
 public:
  explicit Accelerator(AcceleratorOptions options = AcceleratorOptions::from_env(),
                       std::shared_ptr<distributed::ProcessGroup> group = nullptr);
  ~Accelerator();

  /// @name properties
  /// @{
  Device device() const { return device_; }
  int num_processes() const { return group_->size(); }
  int process_index() const { return group_->rank(); }
  int local_process_index() const { return group_->local_rank(); }
  bool is_main_process() const { return process_index() == 0; }
  bool is_local_main_process() const { return local_process_index() == 0; }
  const std::string& mixed_precision() const { return options_.mixed_precision; }
  int64_t gradient_accumulation_steps() const { return options_.gradient_accumulation_steps; }
  bool sync_gradients() const { return sync_gradients_; }
  bool optimizer_step_was_skipped() const { return step_was_skipped_; }
  int64_t step() const { return accumulation_step_; }
  distributed::ProcessGroup& process_group() { return *group_; }
  GradScaler* scaler() { return scaler_ ? &*scaler_ : nullptr; }
  const AcceleratorOptions& options() const { return options_; }
  /// @}

  /// @name prepare
  /// @{
  template <typename... Objects>
  auto prepare(Objects&&... objects) {
    return std::make_tuple(prepare_one(std::forward<Objects>(objects))...);
  }
  template <typename M>
  std::shared_ptr<M> unwrap_model(const std::shared_ptr<M>& model) const { return model; }
  /// The DDP reducer prepare() attached to `model` (several processes), else null.
  distributed::DistributedDataParallel* ddp_of(const nn::Module& model) const;
  /// The ZeRO engine (zero_stage 1-3, once the model and its optimizer are prepared), else null.
  distributed::ZeroEngine* zero() const { return zero_.get(); }
  /// The model's full weights (HF names), copies; gathers them under ZeRO stage 3, so every
  /// process must call it then (Accelerate's get_state_dict).
  std::map<std::string, Tensor> get_state_dict(const nn::Module& model);
  /// @}

  /// @name training step
  /// @{
  void backward(const Tensor& loss);
  /// Scope of one micro-batch: decides sync_gradients (every gradient_accumulation_steps-th
  /// call, and the last batch of the data loader).
  class AccumulateScope {
   public:
    AccumulateScope(Accelerator& accelerator, nn::Module& model);
    ~AccumulateScope();
    AccumulateScope(const AccumulateScope&) = delete;
    AccumulateScope& operator=(const AccumulateScope&) = delete;

   private:
    Accelerator& accelerator_;
  };
  [[nodiscard]] AccumulateScope accumulate(nn::Module& model) { return AccumulateScope(*this, model); }
  [[nodiscard]] AutocastGuard autocast() const;
  /// Unscales first under fp16; returns the total norm before clipping.
  double clip_grad_norm_(const std::vector<Tensor>& parameters, double max_norm, double norm_type = 2.0);
  /// @}

  /// @name collectives
  /// @{
  /// They run on device() copies of their inputs and return results on the input's device.
  /// Concatenates every process's tensor along dim 0.
  Tensor gather(const Tensor& tensor);
  /// gather, then drops the samples even_batches duplicated in the last batch of an epoch.
  Tensor gather_for_metrics(const Tensor& tensor);
  Tensor reduce(const Tensor& tensor, const std::string& reduction = "sum");
  /// Pads dim `dim` to the largest size across processes with pad_index.
  Tensor pad_across_processes(const Tensor& tensor, int64_t dim = 0, double pad_index = 0);
  void wait_for_everyone();
  template <typename... Args>
  void print(const Args&... args) const {
    if (!is_main_process()) return;
    std::ostringstream line;
    ((line << args), ...);
    std::cout << line.str() << std::endl;
  }
  /// Runs the main process first, the others after it (e.g. dataset preprocessing).
  class MainProcessFirst {
   public:
    explicit MainProcessFirst(Accelerator& accelerator);
    ~MainProcessFirst();

   private:
    Accelerator& accelerator_;
  };
  [[nodiscard]] MainProcessFirst main_process_first() { return MainProcessFirst(*this); }
  /// @}

  /// @name checkpoints
  /// @{
  /// Writes model(s), optimizer(s), scheduler(s), scaler, RNG state, data loader positions and
  /// registered objects into dir (or the next automatic checkpoint dir); atomic. Returns dir.
  std::string save_state(const std::string& dir = "");
  void load_state(const std::string& dir = "");  // "" = the latest automatic checkpoint
  void register_for_checkpointing(std::shared_ptr<Checkpointable> object);
  /// Weights only, as model.safetensors (or shards of at most max_shard_size bytes with
  /// model.safetensors.index.json); HF names.
  void save_model(const nn::Module& model, const std::string& dir, int64_t max_shard_size = 10'000'000'000);
  void skip_first_batches(PreparedDataLoader& loader, int64_t num_batches);
  void set_seed(uint64_t seed);
  /// @}

  /// @name trackers
  /// @{
  void init_trackers(const std::string& project_name, const trackers::Values& config = {});
  void log(const trackers::Values& values, int64_t step);
  void end_training();
  /// @}

 private:
  friend class AcceleratedOptimizer;
  friend class AcceleratedScheduler;
  friend class PreparedDataLoader;

  template <typename T>
  auto prepare_one(const std::shared_ptr<T>& object) {
    if constexpr (std::is_base_of_v<nn::Module, T>) {
      prepare_model(object);
      return object;
    } else if constexpr (std::is_base_of_v<nn::Optimizer, T>) {
      auto prepared = std::make_shared<AcceleratedOptimizer>(object, *this);
      optimizers_.push_back(prepared);
      attach_zero();
      return prepared;
    } else if constexpr (std::is_same_v<T, nn::LRScheduler>) {
      auto prepared = std::make_shared<AcceleratedScheduler>(object, *this);
      schedulers_.push_back(prepared);
      return prepared;
    } else if constexpr (std::is_same_v<T, data::DataLoader>) {
      auto prepared = std::make_shared<PreparedDataLoader>(object, *this);
      prepare_loader(*object);
      loaders_.push_back(prepared);
      return prepared;
    } else {
      static_assert(sizeof(T) == 0, "prepare: expected a model, optimizer, data loader or scheduler");
    }
  }
  void place(std::shared_ptr<distributed::ProcessGroup> group);
  void prepare_model(std::shared_ptr<nn::Module> model);
  void attach_zero();
  void prepare_loader(data::DataLoader& loader);
  void on_batch(const data::Batch& batch, bool is_last);
  std::string next_checkpoint_dir();

  AcceleratorOptions options_;
  std::shared_ptr<distributed::ProcessGroup> group_;
  Device device_;
  std::optional<GradScaler> scaler_;
  bool sync_gradients_ = true;
  bool step_was_skipped_ = false;
  bool end_of_dataloader_ = false;
  int64_t accumulation_step_ = 0;
  int64_t last_batch_padding_ = 0;
  std::vector<std::shared_ptr<nn::Module>> models_;
  std::map<const nn::Module*, std::unique_ptr<distributed::DistributedDataParallel>> ddp_;
  std::unique_ptr<distributed::ZeroEngine> zero_;
  std::vector<std::shared_ptr<AcceleratedOptimizer>> optimizers_;
  std::vector<std::shared_ptr<AcceleratedScheduler>> schedulers_;
  std::vector<std::shared_ptr<PreparedDataLoader>> loaders_;
  std::vector<std::shared_ptr<Checkpointable>> custom_objects_;
  std::vector<std::unique_ptr<trackers::Tracker>> trackers_;
};

}  // namespace accel
