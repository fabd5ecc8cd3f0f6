// The Accelerator: options, prepare, the training-step helpers and the collectives.
// Checkpoints are in checkpoint.cc.
#include "accelerate/accelerator.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include "accelerate/device_choice.h"
#include "core/autograd/grad_mode.h"
#include "core/random.h"
#include "core/trace.h"
#include "distributed/mpi.h"
#include "distributed/rendezvous.h"

#ifdef ACCEL_WITH_CUDA
#include "distributed/nccl.h"
#endif

namespace accel {

namespace {

std::optional<std::string> env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

int64_t env_int(const char* name, const std::string& value) {
  try {
    size_t used = 0;
    int64_t v = std::stoll(value, &used);
    if (used == value.size()) return v;
  } catch (const std::exception&) {
  }
  ACCEL_FAIL(name, "=\"", value, "\" is not an integer");
}

// The group between the GPU processes of a job: NCCL. Never reached in a build without CUDA,
// where visible_cuda_devices() is 0.
std::shared_ptr<distributed::ProcessGroup> make_gpu_group() {
#ifdef ACCEL_WITH_CUDA
  return distributed::make_nccl_group();
#else
  ACCEL_FAIL("Accelerator: CUDA processes talk through NCCL, which this build without CUDA does not have");
#endif
}

}  // namespace

AcceleratorOptions AcceleratorOptions::from_env(AcceleratorOptions base) {
  if (auto v = env("ACCEL_MIXED_PRECISION"); v && base.mixed_precision == "no") base.mixed_precision = *v;
  if (auto v = env("ACCEL_GRADIENT_ACCUMULATION_STEPS"); v && base.gradient_accumulation_steps == 1) {
    base.gradient_accumulation_steps = env_int("ACCEL_GRADIENT_ACCUMULATION_STEPS", *v);
  }
  if (auto v = env("ACCEL_USE_CPU"); v) base.cpu = base.cpu || *v == "1" || *v == "true";
  if (auto v = env("ACCEL_SEED"); v && !base.seed) base.seed = static_cast<uint64_t>(env_int("ACCEL_SEED", *v));
  if (auto v = env("ACCEL_PROJECT_DIR"); v && base.project_config.project_dir.empty()) {
    base.project_config.project_dir = *v;
  }
  if (auto v = env("ACCEL_LOG_WITH"); v && base.log_with.empty()) {
    std::stringstream list(*v);
    for (std::string item; std::getline(list, item, ',');) base.log_with.push_back(item);
  }
  if (auto v = env("ACCEL_ZERO_STAGE"); v && base.zero_stage == 0) base.zero_stage = static_cast<int>(env_int("ACCEL_ZERO_STAGE", *v));
  if (auto v = env("ACCEL_DDP_BUCKET_MB"); v && base.ddp.bucket_bytes == distributed::DDPOptions{}.bucket_bytes) {
    char* end = nullptr;
    double mb = std::strtod(v->c_str(), &end);
    ACCEL_CHECK(*end == '\0' && mb > 0, "ACCEL_DDP_BUCKET_MB=\"", *v, "\" is not a positive number of megabytes");
    base.ddp.bucket_bytes = std::max<int64_t>(1, static_cast<int64_t>(mb * 1024 * 1024));
  }
  return base;
}

// ---- prepared wrappers ----

AcceleratedOptimizer::AcceleratedOptimizer(std::shared_ptr<nn::Optimizer> optimizer, Accelerator& accelerator)
    : optimizer_(std::move(optimizer)), accelerator_(accelerator) {}

void AcceleratedOptimizer::step() {
  if (!accelerator_.sync_gradients()) return;
  trace::Span span("optimizer.step", "step");
  GradScaler* scaler = accelerator_.scaler();
  if (scaler != nullptr) {
    accelerator_.step_was_skipped_ = !scaler->step(*optimizer_);
    scaler->update();
  } else {
    optimizer_->step();
    accelerator_.step_was_skipped_ = false;
  }
  // Every process skipped or stepped alike (the scaler agrees on inf/NaN across them).
  if (accelerator_.zero_ && !accelerator_.step_was_skipped_) accelerator_.zero_->after_optimizer_step();
}

void AcceleratedOptimizer::zero_grad(bool set_to_none) {
  if (!accelerator_.sync_gradients()) return;
  optimizer_->zero_grad(set_to_none);
  if (accelerator_.zero_) accelerator_.zero_->zero_grad();
}

AcceleratedScheduler::AcceleratedScheduler(std::shared_ptr<nn::LRScheduler> scheduler, Accelerator& accelerator)
    : scheduler_(std::move(scheduler)), accelerator_(accelerator) {}

void AcceleratedScheduler::step() {
  if (!accelerator_.sync_gradients() || accelerator_.optimizer_step_was_skipped()) return;
  for (int i = 0; i < accelerator_.num_processes(); ++i) scheduler_->step();
}

PreparedDataLoader::PreparedDataLoader(std::shared_ptr<data::DataLoader> loader, Accelerator& accelerator)
    : loader_(std::move(loader)), accelerator_(accelerator) {}

PreparedDataLoader::Iterator PreparedDataLoader::begin() {
  accelerator_.end_of_dataloader_ = false;
  loader_->start_epoch(next_epoch_++, skip_next_);
  skip_next_ = 0;
  return Iterator(this);
}

void PreparedDataLoader::resume_at(int64_t epoch, int64_t skip_batches) {
  next_epoch_ = epoch;
  skip_next_ = skip_batches;
}

PreparedDataLoader::Iterator::Iterator(PreparedDataLoader* owner) : owner_(owner) { fetch(); }

PreparedDataLoader::Iterator& PreparedDataLoader::Iterator::operator++() {
  fetch();
  return *this;
}

void PreparedDataLoader::Iterator::fetch() {
  data::DataLoader& loader = *owner_->loader_;
  current_ = loader.next();
  if (current_) owner_->accelerator_.on_batch(*current_, loader.batches_yielded() == loader.size());
}

// ---- Accelerator ----

Accelerator::Accelerator(AcceleratorOptions options, std::shared_ptr<distributed::ProcessGroup> group)
    : options_(std::move(options)) {
  const std::string& mp = options_.mixed_precision;
  ACCEL_CHECK(mp == "no" || mp == "fp16" || mp == "bf16", "Accelerator: mixed_precision must be no, fp16 or bf16, got \"",
              mp, "\"");
  ACCEL_CHECK(options_.zero_stage >= 0 && options_.zero_stage <= 3, "Accelerator: zero_stage must be 0, 1, 2 or 3, "
              "got ", options_.zero_stage);
  ACCEL_CHECK(options_.gradient_accumulation_steps >= 1, "Accelerator: gradient_accumulation_steps must be at least 1, "
              "got ", options_.gradient_accumulation_steps);
  for (const std::string& tracker : options_.log_with) {
    ACCEL_CHECK(tracker == "jsonl" || tracker == "tensorboard" || tracker == "all", "Accelerator: unknown tracker \"",
                tracker, "\" (expected jsonl, tensorboard or all)");
  }
  place(std::move(group));
  if (mp == "fp16") scaler_.emplace();
  if (options_.seed) set_seed(*options_.seed);
}

Accelerator::~Accelerator() = default;

// The device and the process group (the rule is in accelerator.h). The device is settled
// before any group is built, so that a run that cannot work (ZeRO on CUDA, a local rank
// without a GPU) fails before NCCL starts.
void Accelerator::place(std::shared_ptr<distributed::ProcessGroup> group) {
  const int visible = options_.cpu ? 0 : visible_cuda_devices();  // --cpu never asks the driver
  const bool backend_named = std::getenv("ACCEL_BACKEND") != nullptr && *std::getenv("ACCEL_BACKEND") != '\0';
  if (!group && (visible == 0 || backend_named)) group = distributed::make_default_group();
  std::function<std::shared_ptr<distributed::ProcessGroup>()> make_group;  // built once the device is settled
  if (group) {
    // The group wins; the device follows it: CUDA only where its collectives take CUDA tensors.
    const bool takes_cuda = group->backend() == "nccl" || group->backend() == "single";
    device_ = accelerator_device(!takes_cuda, visible, group->local_rank());
  } else {
    int processes = 1, local_rank = 0;
    if (distributed::started_by_mpi_launcher()) {
      std::shared_ptr<distributed::ProcessGroup> mpi = distributed::make_mpi_group();
      processes = mpi->size();
      local_rank = distributed::local_rank_from_environment(mpi->local_rank());
    } else {
      processes = distributed::rendezvous_plan_from_environment().world_size;
      local_rank = distributed::local_rank_from_environment(0);
    }
    device_ = accelerator_device(false, visible, local_rank);
    make_group = [processes] {
      return processes > 1 ? make_gpu_group() : distributed::make_single_process_group();
    };
  }
  ACCEL_CHECK(options_.zero_stage == 0 || device_.is_cpu(), "Accelerator: ZeRO stage ", options_.zero_stage,
              " needs the CPU for now (it packs its shards with host memory copies): expected the CPU "
              "(AcceleratorOptions::cpu, ACCEL_USE_CPU=1 or `accel launch --cpu`), found ", device_,
              " chosen from ", visible, " visible CUDA device(s); or use zero_stage 0 (DDP), which runs on CUDA");
  make_device_current(device_);
  group_ = group ? std::move(group) : make_group();
}

void Accelerator::prepare_model(std::shared_ptr<nn::Module> model) {
  model->to(device_);
  // Every process starts from rank 0's weights.
  if (num_processes() > 1) {
    NoGradGuard no_grad;
    for (Tensor& p : model->parameters()) group_->broadcast(p, 0)->wait();
    if (options_.zero_stage == 0) {
      ddp_[model.get()] = std::make_unique<distributed::DistributedDataParallel>(*model, group_, options_.ddp);
    }
  }
  models_.push_back(std::move(model));
  attach_zero();
}

// ZeRO needs the model and its optimizer together; whichever prepare() sees second attaches it.
void Accelerator::attach_zero() {
  if (options_.zero_stage == 0 || zero_ || models_.empty() || optimizers_.empty()) return;
  ACCEL_CHECK(models_.size() == 1 && optimizers_.size() == 1, "Accelerator: ZeRO shards one model and its optimizer; "
              "got ", models_.size(), " models and ", optimizers_.size(), " optimizers");
  zero_ = std::make_unique<distributed::ZeroEngine>(
      *models_[0], optimizers_[0]->optimizer(), group_,
      distributed::ZeroOptions{.stage = options_.zero_stage, .bucket_bytes = options_.ddp.bucket_bytes});
  if (scaler_) scaler_->set_process_group(group_, device_);  // shards differ: agree on inf/NaN
}

std::map<std::string, Tensor> Accelerator::get_state_dict(const nn::Module& model) {
  if (zero_ && !models_.empty() && models_[0].get() == &model) return zero_->full_state_dict();
  NoGradGuard no_grad;
  std::map<std::string, Tensor> state;
  for (auto& [name, tensor] : model.state_dict()) state[name] = tensor.clone();
  return state;
}

distributed::DistributedDataParallel* Accelerator::ddp_of(const nn::Module& model) const {
  auto it = ddp_.find(&model);
  return it == ddp_.end() ? nullptr : it->second.get();
}

void Accelerator::prepare_loader(data::DataLoader& loader) {
  data::DataLoaderOptions o = loader.options();
  o.num_processes = num_processes();
  o.process_index = process_index();
  o.even_batches = options_.even_batches;
  o.device = device_;
  loader.set_options(o);
}

void Accelerator::on_batch(const data::Batch& batch, bool is_last) {
  end_of_dataloader_ = is_last;
  last_batch_padding_ = batch.num_padding_samples;
}

void Accelerator::backward(const Tensor& loss) {
  Tensor scaled = loss;
  if (options_.gradient_accumulation_steps > 1) scaled = scaled / static_cast<double>(options_.gradient_accumulation_steps);
  if (scaler_) scaled = scaler_->scale(scaled);
  scaled.backward();
}

Accelerator::AccumulateScope::AccumulateScope(Accelerator& accelerator, nn::Module&) : accelerator_(accelerator) {
  accelerator_.accumulation_step_ += 1;
  accelerator_.sync_gradients_ = accelerator_.end_of_dataloader_ ||
                                 accelerator_.accumulation_step_ % accelerator_.options_.gradient_accumulation_steps == 0;
  for (auto& [model, ddp] : accelerator_.ddp_) ddp->set_require_backward_grad_sync(accelerator_.sync_gradients_);
  if (accelerator_.zero_) accelerator_.zero_->set_require_backward_grad_sync(accelerator_.sync_gradients_);
}

Accelerator::AccumulateScope::~AccumulateScope() = default;

AutocastGuard Accelerator::autocast() const {
  const std::string& mp = options_.mixed_precision;
  return AutocastGuard(mp == "fp16" ? kFloat16 : kBFloat16, mp != "no");
}

double Accelerator::clip_grad_norm_(const std::vector<Tensor>& parameters, double max_norm, double norm_type) {
  if (scaler_) {
    for (auto& optimizer : optimizers_) scaler_->unscale_(optimizer->optimizer());
  }
  // Under ZeRO the gradients live in shards: the norm is over every process's shard.
  if (zero_) return zero_->clip_grad_norm_(max_norm, norm_type);
  return nn::clip_grad_norm_(parameters, max_norm, norm_type);
}

// The collectives below run on device() copies of their inputs (the NCCL group takes only
// its GPU's tensors) and return results on the input's device.
Tensor Accelerator::gather(const Tensor& tensor) {
  NoGradGuard no_grad;
  Tensor input = (tensor.dim() == 0 ? tensor.reshape({1}) : tensor).to(device_).contiguous();
  Shape out_shape = input.sizes();
  out_shape[0] *= num_processes();
  Tensor output = empty(out_shape, {input.dtype(), device_});
  group_->all_gather(input, output)->wait();
  return output.to(tensor.device());
}

Tensor Accelerator::gather_for_metrics(const Tensor& tensor) {
  Tensor gathered = gather(tensor);
  if (!end_of_dataloader_) return gathered;
  // The last round duplicated last_batch_padding_ samples (summed over ranks): drop them.
  // Every rank takes part in the sum, also those without padding: collectives must match.
  int64_t padding_total = reduce(scalar_tensor(last_batch_padding_, kInt64, device_), "sum").item<int64_t>();
  return gathered.narrow(0, 0, gathered.size(0) - padding_total);
}

Tensor Accelerator::reduce(const Tensor& tensor, const std::string& reduction) {
  ACCEL_CHECK(reduction == "sum" || reduction == "mean", "reduce: reduction must be sum or mean, got \"", reduction, "\"");
  NoGradGuard no_grad;
  Tensor out = tensor.to(device_).clone();
  group_->all_reduce(out, reduction == "sum" ? distributed::Reduce::Sum : distributed::Reduce::Avg)->wait();
  return out.to(tensor.device());
}

Tensor Accelerator::pad_across_processes(const Tensor& tensor, int64_t dim, double pad_index) {
  int64_t d = wrap_dim(dim, tensor.dim(), "pad_across_processes");
  Tensor size = scalar_tensor(tensor.size(d), kInt64, device_).reshape({1});
  group_->all_reduce(size, distributed::Reduce::Max)->wait();
  int64_t target = size.item<int64_t>();
  if (target == tensor.size(d)) return tensor;
  Shape shape = tensor.sizes();
  shape[d] = target;
  Tensor padded = full(shape, pad_index, {tensor.dtype(), tensor.device()});
  NoGradGuard no_grad;
  padded.narrow(d, 0, tensor.size(d)).copy_(tensor);
  return padded;
}

void Accelerator::wait_for_everyone() { group_->barrier(); }

Accelerator::MainProcessFirst::MainProcessFirst(Accelerator& accelerator) : accelerator_(accelerator) {
  if (!accelerator_.is_main_process()) accelerator_.wait_for_everyone();
}

Accelerator::MainProcessFirst::~MainProcessFirst() {
  if (accelerator_.is_main_process()) accelerator_.wait_for_everyone();
}

void Accelerator::skip_first_batches(PreparedDataLoader& loader, int64_t num_batches) {
  ACCEL_CHECK(num_batches >= 0 && num_batches <= loader.size(), "skip_first_batches: cannot skip ", num_batches,
              " batches of an epoch of ", loader.size());
  loader.resume_at(loader.next_epoch_, num_batches);
}

// The same seed on every process (as accelerate.utils.set_seed): identical initialization.
void Accelerator::set_seed(uint64_t seed) { manual_seed(seed); }

// ---- trackers ----

void Accelerator::init_trackers(const std::string& project_name, const trackers::Values& config) {
  if (!is_main_process()) return;
  std::string dir = options_.project_config.logging_dir;
  if (dir.empty()) dir = (std::filesystem::path(options_.project_config.project_dir.empty() ? "." :
                                                 options_.project_config.project_dir) / "logs").string();
  for (const std::string& kind : options_.log_with) {
    if (kind == "jsonl" || kind == "all") trackers_.push_back(trackers::make_jsonl_tracker(dir, project_name));
    if (kind == "tensorboard" || kind == "all") trackers_.push_back(trackers::make_tensorboard_tracker(dir, project_name));
  }
  for (auto& tracker : trackers_) tracker->log_config(config);
}

void Accelerator::log(const trackers::Values& values, int64_t step) {
  for (auto& tracker : trackers_) tracker->log(values, step);
}

void Accelerator::end_training() {
  for (auto& tracker : trackers_) tracker->finish();
  trackers_.clear();
  wait_for_everyone();
}

}  // namespace accel
