// ZeroEngine (see zero.h): the partition, the gradient hooks and buckets (reduce-scatter),
// the parameter all-gathers (after the step for stages 1-2, around each layer for stage 3),
// clipping over shards, the memory report, and the checkpoint pieces.
#include "distributed/zero.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <unordered_map>

#include "core/autograd/grad_mode.h"
#include "core/autograd/node.h"
#include "core/ops.h"

namespace accel::distributed {

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Elements of chunk `rank` that exist in a tensor of `numel` cut into chunks of `chunk`.
int64_t chunk_length(int64_t numel, int64_t chunk, int64_t rank) {
  return std::clamp<int64_t>(numel - rank * chunk, 0, chunk);
}

// Raw byte copies between CPU tensors: the stage-3 gathers write a parameter's own values
// back, which must not bump the version counter that autograd's saved tensors check.
char* bytes_of(const Tensor& t) { return static_cast<char*>(t.data_ptr()); }

}  // namespace

struct ZeroEngine::Impl : std::enable_shared_from_this<Impl>, nn::ForwardHooks {
  struct Param {
    std::string name;
    Tensor full;    // the model's parameter (released between uses under stage 3)
    Tensor shard;   // (owned) this rank's elements: the optimizer's parameter
    int64_t numel = 0, chunk = 0, owned = 0;
    int64_t bucket = 0, offset = 0;  // offset of its chunk in the bucket's per-rank segment
    int64_t layer = -1;              // stage 3: the layer that holds it
    bool ready = false;              // its gradient is in the bucket (this pass)
  };
  struct Bucket {
    std::vector<int64_t> params;
    int64_t segment = 0;  // elements per rank: sum of the chunks
    Tensor input;         // (world * segment) rank-major gradient chunks, this pass
    Tensor output;        // (segment) the reduced chunks this rank owns
    int64_t pending = 0;
    std::shared_ptr<Work> work;
  };
  enum class LayerState { Released, Gathering, Materialized };
  struct Layer {
    const nn::Module* module = nullptr;
    std::vector<int64_t> params;
    int64_t segment = 0;
    LayerState state = LayerState::Released;
    Tensor gathered;  // (world * segment) while Gathering
    std::shared_ptr<Work> work;
    int64_t gradients_pending = 0;  // this backward pass
  };

  nn::Module* model = nullptr;
  nn::Optimizer* optimizer = nullptr;
  std::shared_ptr<ProcessGroup> group;
  ZeroOptions options;
  int64_t world = 1, rank = 0;
  std::vector<Param> params;
  std::vector<Bucket> buckets;
  std::vector<Layer> layers;
  std::unordered_map<const nn::Module*, int64_t> layer_of_module;
  std::vector<int64_t> forward_order, forward_position, backward_order, backward_position;
  bool sync = true;
  bool in_backward = false;
  int64_t next_launch = 0;

  // ---- packing between parameters and rank-major bucket buffers ----

  // Writes chunk r of `source` (numel elements) into buffer at r * segment + offset, for every r.
  void scatter_chunks(const Param& p, const Tensor& source, Tensor& buffer, int64_t segment) const {
    const int64_t item = source.element_size();
    const char* from = bytes_of(source);
    char* to = bytes_of(buffer);
    for (int64_t r = 0; r < world; ++r) {
      int64_t length = chunk_length(p.numel, p.chunk, r);
      if (length > 0) std::memcpy(to + (r * segment + p.offset) * item, from + r * p.chunk * item, length * item);
    }
  }
  // The inverse: chunk r at r * segment + offset of buffer into `target` (numel elements).
  void gather_chunks(const Param& p, const Tensor& buffer, int64_t segment, const Tensor& target) const {
    const int64_t item = target.element_size();
    const char* from = bytes_of(buffer);
    char* to = bytes_of(target);
    for (int64_t r = 0; r < world; ++r) {
      int64_t length = chunk_length(p.numel, p.chunk, r);
      if (length > 0) std::memcpy(to + r * p.chunk * item, from + (r * segment + p.offset) * item, length * item);
    }
  }
  // (segment) this rank's shards of `members`, each padded with zeros to its chunk and placed
  // at its offset: what this rank contributes to an all_gather of them.
  Tensor pack_shards(const std::vector<int64_t>& members, int64_t segment) const {
    Tensor packed = zeros({segment}, {params[members.front()].shard.dtype()});
    for (int64_t i : members) {
      const Param& p = params[i];
      const int64_t item = p.shard.element_size();
      if (p.owned > 0) std::memcpy(bytes_of(packed) + p.offset * item, bytes_of(p.shard), p.owned * item);
    }
    return packed;
  }


  // ---- gradients ----

  // Post-accumulate-grad hook of parameter `index`.
  void on_gradient(int64_t index) {
    if (options.stage == 1 && !sync) return;
    if (!in_backward) begin_backward();
    Param& p = params[index];
    if (options.stage >= 2) {
      ACCEL_CHECK(!p.ready, "ZeRO: parameter ", p.name, " received a second gradient in one backward pass");
      Bucket& bucket = buckets[p.bucket];
      if (!bucket.input.defined()) bucket.input = zeros({world * bucket.segment}, {p.full.dtype()});
      scatter_chunks(p, p.full.grad().contiguous(), bucket.input, bucket.segment);
      p.full.set_grad(Tensor());  // not this rank's to keep
      p.ready = true;
      if (--bucket.pending == 0) launch_ready_buckets();
      poll();
    }
    if (p.layer >= 0 && --layers[p.layer].gradients_pending == 0) release(p.layer);
  }

  void begin_backward() {
    in_backward = true;
    next_launch = 0;
    for (Param& p : params) p.ready = false;
    for (Bucket& bucket : buckets) bucket.pending = static_cast<int64_t>(bucket.params.size());
    for (Layer& layer : layers) layer.gradients_pending = static_cast<int64_t>(layer.params.size());
    std::weak_ptr<Impl> weak = weak_from_this();
    autograd::queue_callback([weak] {
      if (auto impl = weak.lock()) impl->finish_backward();
    });
  }

  // Buckets start in index order, so every rank issues the same collectives in the same order.
  void launch_ready_buckets() {
    while (next_launch < static_cast<int64_t>(buckets.size()) && buckets[next_launch].pending == 0) {
      Bucket& bucket = buckets[next_launch++];
      const DType dtype = params[bucket.params[0]].full.dtype();
      if (!bucket.input.defined()) bucket.input = zeros({world * bucket.segment}, {dtype});
      bucket.output = empty({bucket.segment}, {bucket.input.dtype()});
      bucket.work = group->reduce_scatter(bucket.input, bucket.output, Reduce::Avg);
    }
  }

  // Lets MPI progress the collectives in flight: without a call into MPI, a non-blocking
  // collective may not move until it is waited for, and nothing would overlap backward.
  void poll() {
    for (int64_t i = 0; i < next_launch; ++i) {
      if (buckets[i].work) buckets[i].work->is_completed();
    }
    for (Layer& layer : layers) {
      if (layer.state == LayerState::Gathering) layer.work->is_completed();
    }
  }

  // Which parameters any rank had a gradient for in this pass (one small all_reduce): the
  // others keep no gradient, as in single-process training.
  std::vector<int32_t> used_anywhere(const std::vector<int32_t>& used_here) {
    Tensor flags = from_vector<int32_t>(used_here);
    group->all_reduce(flags, Reduce::Max)->wait();
    return flags.to_vector<int32_t>();
  }

  // The end of a backward pass (engine callback, grad mode off).
  void finish_backward() {
    in_backward = false;
    if (options.stage == 1) {
      finish_stage1();
    } else {
      std::vector<int32_t> used(params.size());
      for (size_t i = 0; i < params.size(); ++i) {
        used[i] = params[i].ready;
        if (!params[i].ready) buckets[params[i].bucket].pending -= 1;  // its chunks stay zero
      }
      launch_ready_buckets();
      used = used_anywhere(used);
      for (Bucket& bucket : buckets) {
        bucket.work->wait();
        for (int64_t index : bucket.params) {
          Param& p = params[index];
          if (!used[index] || p.owned == 0) continue;
          Tensor reduced = bucket.output.narrow(0, p.offset, p.owned);
          if (p.shard.grad().defined()) p.shard.mutable_grad().add_(reduced);
          else p.shard.set_grad(reduced.clone());
        }
        bucket.input = bucket.output = Tensor();
        bucket.work = nullptr;
      }
    }
    for (int64_t i = 0; i < static_cast<int64_t>(layers.size()); ++i) release(i);
  }

  // Stage 1 reduces the accumulated full gradients once, after the synchronizing backward;
  // the reduced chunk is written into this rank's slice of .grad, which the shard's gradient views.
  void finish_stage1() {
    std::vector<int32_t> used(params.size());
    for (size_t i = 0; i < params.size(); ++i) used[i] = params[i].full.grad().defined();
    used = used_anywhere(used);
    for (Bucket& bucket : buckets) {
      bucket.input = zeros({world * bucket.segment}, {params[bucket.params[0]].full.dtype()});
      for (int64_t index : bucket.params) {
        const Param& p = params[index];
        if (p.full.grad().defined()) scatter_chunks(p, p.full.grad().contiguous(), bucket.input, bucket.segment);
      }
      bucket.output = empty({bucket.segment}, {bucket.input.dtype()});
      bucket.work = group->reduce_scatter(bucket.input, bucket.output, Reduce::Avg);
    }
    for (Bucket& bucket : buckets) {
      bucket.work->wait();
      for (int64_t index : bucket.params) {
        Param& p = params[index];
        if (!used[index]) continue;
        if (!p.full.grad().defined()) p.full.set_grad(zeros_like(p.full));
        Tensor mine = p.full.grad().view({-1}).narrow(0, rank * p.chunk, p.owned);
        if (p.owned > 0) mine.copy_(bucket.output.narrow(0, p.offset, p.owned));
        if (p.owned > 0) p.shard.set_grad(mine);
      }
      bucket.input = bucket.output = Tensor();
      bucket.work = nullptr;
    }
  }

  // ---- stage 3: layers ----

  void note_order(std::vector<int64_t>& order, std::vector<int64_t>& position, int64_t layer) {
    if (position[layer] < 0) {
      position[layer] = static_cast<int64_t>(order.size());
      order.push_back(layer);
    }
  }

  void start_gather(int64_t index) {
    Layer& layer = layers[index];
    if (layer.state != LayerState::Released) return;
    Tensor mine = pack_shards(layer.params, layer.segment);
    layer.gathered = empty({world * layer.segment}, {mine.dtype()});
    layer.work = group->all_gather(mine, layer.gathered);
    layer.state = LayerState::Gathering;
  }

  void materialize(int64_t index) {
    Layer& layer = layers[index];
    start_gather(index);
    if (layer.state != LayerState::Gathering) return;
    layer.work->wait();
    for (int64_t i : layer.params) {
      Param& p = params[i];
      p.full.storage()->reallocate();
      gather_chunks(p, layer.gathered, layer.segment, p.full);
    }
    layer.gathered = Tensor();
    layer.work = nullptr;
    layer.state = LayerState::Materialized;
  }

  void release(int64_t index) {
    Layer& layer = layers[index];
    if (layer.state == LayerState::Gathering) materialize(index);  // a prefetch nobody used: finish it
    if (layer.state != LayerState::Materialized) return;
    for (int64_t i : layer.params) params[i].full.storage()->release();
    layer.state = LayerState::Released;
  }

  void prefetch_after(const std::vector<int64_t>& order, const std::vector<int64_t>& position, int64_t layer) {
    if (!options.prefetch) return;
    int64_t at = position[layer];
    if (at >= 0 && at + 1 < static_cast<int64_t>(order.size())) start_gather(order[at + 1]);
  }

  void before_forward(const nn::Module& module) override {
    int64_t index = layer_of_module.at(&module);
    materialize(index);
    note_order(forward_order, forward_position, index);
    prefetch_after(forward_order, forward_position, index);
  }

  void after_forward(const nn::Module& module, const Tensor& output) override {
    int64_t index = layer_of_module.at(&module);
    if (GradMode::is_enabled() && output.requires_grad()) {
      // The output's gradient arrives just before this layer's backward reads its parameters.
      std::weak_ptr<Impl> weak = weak_from_this();
      output.register_hook([weak, index](const Tensor&) {
        if (auto impl = weak.lock()) {
          impl->materialize(index);
          impl->note_order(impl->backward_order, impl->backward_position, index);
          impl->prefetch_after(impl->backward_order, impl->backward_position, index);
        }
        return Tensor();
      });
    }
    release(index);
  }

  // ---- stages 1-2: after the step ----

  void all_gather_parameters() {
    NoGradGuard no_grad;
    std::vector<Tensor> gathered(buckets.size());
    std::vector<std::shared_ptr<Work>> works(buckets.size());
    for (size_t b = 0; b < buckets.size(); ++b) {
      Bucket& bucket = buckets[b];
      Tensor mine = pack_shards(bucket.params, bucket.segment);
      gathered[b] = empty({world * bucket.segment}, {mine.dtype()});
      works[b] = group->all_gather(mine, gathered[b]);
    }
    for (size_t b = 0; b < buckets.size(); ++b) {
      works[b]->wait();
      for (int64_t i : buckets[b].params) {
        gather_chunks(params[i], gathered[b], buckets[b].segment, params[i].full);
        params[i].full.storage()->bump_version();
      }
    }
  }
};

ZeroEngine::ZeroEngine(nn::Module& model, nn::Optimizer& optimizer, std::shared_ptr<ProcessGroup> group,
                       ZeroOptions options)
    : impl_(std::make_shared<Impl>()) {
  ACCEL_CHECK(options.stage >= 1 && options.stage <= 3, "ZeRO: stage must be 1, 2 or 3, got ", options.stage);
  ACCEL_CHECK(options.bucket_bytes > 0, "ZeRO: bucket_bytes must be positive, got ", options.bucket_bytes);
  Impl& z = *impl_;
  z.model = &model;
  z.optimizer = &optimizer;
  z.group = std::move(group);
  z.options = options;
  z.world = z.group->size();
  z.rank = z.group->rank();

  // Trainable parameters, each once (tied weights appear under several names).
  std::unordered_map<const TensorImpl*, int64_t> index_of;
  for (auto& [name, p] : model.named_parameters()) {
    if (!p.requires_grad() || index_of.count(p.impl())) continue;
    ACCEL_CHECK(p.is_cpu(), "ZeRO: parameter ", name, " is on ", p.device().str(), "; ZeRO runs on CPU tensors "
                "only for now (it packs shards with host memory copies): keep the model on the CPU");
    ACCEL_CHECK(p.is_contiguous() && p.storage_offset() == 0 && p.storage()->nbytes() == p.nbytes(),
                "ZeRO: parameter ", name, " must own its whole storage (it views another tensor's memory)");
    index_of[p.impl()] = static_cast<int64_t>(z.params.size());
    Impl::Param param;
    param.name = name;
    param.full = p;
    param.numel = p.numel();
    param.chunk = std::max<int64_t>(1, ceil_div(p.numel(), z.world));
    param.owned = chunk_length(param.numel, param.chunk, z.rank);
    z.params.push_back(std::move(param));
  }
  ACCEL_CHECK(!z.params.empty(), "ZeRO: the model has no trainable parameters");

  // Buckets of about bucket_bytes, in reverse registration order (the order backward
  // produces gradients), as DDP's.
  for (int64_t i = static_cast<int64_t>(z.params.size()) - 1; i >= 0; --i) {
    Impl::Param& p = z.params[i];
    int64_t bytes = z.buckets.empty() ? 0 : z.buckets.back().segment * z.world * p.full.element_size();
    if (z.buckets.empty() || bytes >= options.bucket_bytes) z.buckets.emplace_back();
    Impl::Bucket& bucket = z.buckets.back();
    p.bucket = static_cast<int64_t>(z.buckets.size()) - 1;
    p.offset = bucket.segment;
    bucket.segment += p.chunk;
    bucket.params.push_back(i);
  }

  // The shards, and the optimizer's groups remapped onto them.
  {
    NoGradGuard no_grad;
    for (Impl::Param& p : z.params) {
      Tensor flat = p.full.detach().view({-1}).narrow(0, std::min(z.rank * p.chunk, p.numel), p.owned);
      p.shard = options.stage == 3 ? flat.clone() : flat;
      p.shard.requires_grad_(true);
    }
  }
  std::vector<std::vector<Tensor>> shards_per_group;
  for (const nn::ParamGroup& g : optimizer.param_groups()) {
    std::vector<Tensor> shards;
    for (const Tensor& p : g.params) {
      auto it = index_of.find(p.impl());
      ACCEL_CHECK(it != index_of.end(), "ZeRO: the optimizer holds a tensor of shape ", p.shape_string(),
                  " that is not a trainable parameter of the model; prepare the model and its optimizer together");
      if (z.params[it->second].owned > 0) shards.push_back(z.params[it->second].shard);
    }
    shards_per_group.push_back(std::move(shards));
  }
  optimizer.replace_parameters(std::move(shards_per_group));

  if (options.stage == 3) {
    for (auto& [name, module] : model.named_modules()) {
      std::vector<int64_t> owned_here;
      for (auto& [param_name, p] : module->named_parameters(/*recurse=*/false)) {
        auto it = index_of.find(p.impl());
        if (it != index_of.end() && z.params[it->second].layer < 0) owned_here.push_back(it->second);
      }
      if (owned_here.empty()) continue;
      ACCEL_CHECK(module->runs_forward_hooks(), "ZeRO stage 3: module ", name.empty() ? "<root>" : name, " (",
                  module->type_name(), ") holds parameters directly but its forward does not run the parameter "
                  "hooks (nn::Module::run_forward); keep parameters in Linear, Embedding and LayerNorm layers");
      Impl::Layer layer;
      layer.module = module;
      for (int64_t i : owned_here) {
        z.params[i].layer = static_cast<int64_t>(z.layers.size());
        z.params[i].offset = layer.segment;  // stage 3 buckets reuse the offsets below
        layer.segment += z.params[i].chunk;
        layer.params.push_back(i);
      }
      z.layer_of_module[module] = static_cast<int64_t>(z.layers.size());
      z.layers.push_back(std::move(layer));
      module->set_forward_hooks(std::shared_ptr<nn::ForwardHooks>(impl_));
    }
    // Stage 3's gradient buckets are its layers: one reduce-scatter per layer, in reverse order.
    z.buckets.clear();
    for (int64_t l = static_cast<int64_t>(z.layers.size()) - 1; l >= 0; --l) {
      Impl::Bucket bucket;
      bucket.params = z.layers[l].params;
      bucket.segment = z.layers[l].segment;
      for (int64_t i : bucket.params) z.params[i].bucket = static_cast<int64_t>(z.buckets.size());
      z.buckets.push_back(std::move(bucket));
    }
    z.forward_position.assign(z.layers.size(), -1);
    z.backward_position.assign(z.layers.size(), -1);
    for (auto& layer : z.layers) layer.state = Impl::LayerState::Materialized;  // whole until released here
    for (int64_t l = 0; l < static_cast<int64_t>(z.layers.size()); ++l) z.release(l);
  }

  std::weak_ptr<Impl> weak = impl_;
  for (size_t i = 0; i < z.params.size(); ++i) {
    z.params[i].full.register_post_accumulate_grad_hook([weak, i](const Tensor&) {
      if (auto impl = weak.lock()) impl->on_gradient(static_cast<int64_t>(i));
    });
  }
}

ZeroEngine::~ZeroEngine() {
  if (impl_->options.stage == 3) {
    // Hand the model back whole (its parameters keep their handles), collectively.
    NoGradGuard no_grad;
    try {
      for (int64_t l = 0; l < static_cast<int64_t>(impl_->layers.size()); ++l) impl_->materialize(l);
    } catch (const std::exception&) {
      // A failed peer: the model stays sharded; nothing more can be done in a destructor.
    }
    for (auto& layer : impl_->layers) const_cast<nn::Module*>(layer.module)->set_forward_hooks(nullptr);
  }
}

int ZeroEngine::stage() const { return impl_->options.stage; }
int64_t ZeroEngine::num_buckets() const { return static_cast<int64_t>(impl_->buckets.size()); }
void ZeroEngine::set_require_backward_grad_sync(bool sync) { impl_->sync = sync; }

void ZeroEngine::after_optimizer_step() {
  if (impl_->options.stage <= 2) impl_->all_gather_parameters();
}

void ZeroEngine::zero_grad() {
  for (Impl::Param& p : impl_->params) {
    p.shard.set_grad(Tensor());
    p.full.set_grad(Tensor());
  }
}

double ZeroEngine::clip_grad_norm_(double max_norm, double norm_type) {
  std::vector<Tensor> shards;
  for (const Impl::Param& p : impl_->params) {
    if (p.owned > 0) shards.push_back(p.shard);
  }
  Tensor partial = scalar_tensor(nn::grad_norm_partial(shards, norm_type), kFloat64).reshape({1});
  impl_->group->all_reduce(partial, std::isinf(norm_type) ? Reduce::Max : Reduce::Sum)->wait();
  double total = nn::grad_norm_from_partial(partial.item<double>(), norm_type);
  nn::clip_grads_to_norm(shards, max_norm, total);
  return total;
}

ModelStateMemory ZeroEngine::memory_report() const {
  ModelStateMemory report;
  report.zero_stage = impl_->options.stage;
  for (const Impl::Param& p : impl_->params) {
    report.parameter_bytes += static_cast<int64_t>(impl_->options.stage == 3 ? p.shard.nbytes() : p.full.nbytes());
    // Stage 1's shard gradients view the full ones; stages 2-3 keep only the shard's.
    const Tensor& grad = impl_->options.stage == 1 ? p.full.grad() : p.shard.grad();
    if (grad.defined()) report.gradient_bytes += static_cast<int64_t>(grad.nbytes());
  }
  report.optimizer_bytes = impl_->optimizer->state_bytes();
  return report;
}

std::map<std::string, Tensor> ZeroEngine::full_state_dict() {
  NoGradGuard no_grad;
  Impl& z = *impl_;
  for (int64_t l = 0; l < static_cast<int64_t>(z.layers.size()); ++l) z.materialize(l);
  std::map<std::string, Tensor> state;
  for (auto& [name, tensor] : z.model->state_dict()) state[name] = tensor.clone();
  for (int64_t l = 0; l < static_cast<int64_t>(z.layers.size()); ++l) z.release(l);
  return state;
}

nlohmann::json ZeroEngine::layout() const {
  nlohmann::json parameters = nlohmann::json::array();
  for (const Impl::Param& p : impl_->params) {
    parameters.push_back({{"name", p.name}, {"shape", p.full.sizes()}, {"dtype", dtype_name(p.full.dtype())},
                          {"chunk", p.chunk}});
  }
  return {{"stage", impl_->options.stage}, {"world_size", impl_->world}, {"parameters", parameters}};
}

std::map<std::string, Tensor> ZeroEngine::parameter_shards() const {
  NoGradGuard no_grad;
  std::map<std::string, Tensor> shards;
  for (const Impl::Param& p : impl_->params) {
    Tensor padded = zeros({p.chunk}, {p.shard.dtype()});
    if (p.owned > 0) padded.narrow(0, 0, p.owned).copy_(p.shard);
    shards[p.name] = padded;
  }
  return shards;
}

void ZeroEngine::load_parameter_shards(const std::map<std::string, Tensor>& shards, const nlohmann::json& saved) {
  NoGradGuard no_grad;
  Impl& z = *impl_;
  nlohmann::json mine = layout();
  ACCEL_CHECK(saved.value("world_size", -1) == mine["world_size"] && saved.value("stage", -1) == mine["stage"],
              "ZeRO checkpoint: saved at stage ", saved.value("stage", -1), " on ", saved.value("world_size", -1),
              " processes, but this run is stage ", mine["stage"].get<int>(), " on ", z.world,
              " (consolidate it with `accel merge-weights` to change either)");
  ACCEL_CHECK(saved.at("parameters") == mine.at("parameters"), "ZeRO checkpoint: its parameter layout (names, "
              "shapes, chunks) differs from this model's: it was saved from another model");
  for (Impl::Param& p : z.params) {
    auto it = shards.find(p.name);
    ACCEL_CHECK(it != shards.end(), "ZeRO checkpoint: no shard for parameter ", p.name);
    ACCEL_CHECK(it->second.numel() == p.chunk, "ZeRO checkpoint: the shard of ", p.name, " has ", it->second.numel(),
                " elements, expected ", p.chunk);
    if (p.owned > 0) p.shard.copy_(it->second.narrow(0, 0, p.owned));
  }
  if (z.options.stage <= 2) z.all_gather_parameters();  // the shards view the full parameters
}

std::map<std::string, Tensor> merge_parameter_shards(const nlohmann::json& layout,
                                                     const std::vector<std::map<std::string, Tensor>>& shards) {
  const int64_t world = layout.at("world_size").get<int64_t>();
  ACCEL_CHECK(static_cast<int64_t>(shards.size()) == world, "merge: the layout is for ", world, " ranks but ",
              shards.size(), " shard files were given");
  std::map<std::string, Tensor> merged;
  for (const auto& entry : layout.at("parameters")) {
    const std::string name = entry.at("name").get<std::string>();
    const Shape shape = entry.at("shape").get<Shape>();
    const int64_t chunk = entry.at("chunk").get<int64_t>();
    const int64_t numel = shape_numel(shape);
    ACCEL_CHECK(chunk >= 1 && chunk * world >= numel, "merge: parameter ", name, " has chunk ", chunk,
                " which cannot hold ", numel, " elements on ", world, " ranks");
    Tensor full;
    for (int64_t r = 0; r < world; ++r) {
      auto it = shards[r].find(name);
      ACCEL_CHECK(it != shards[r].end(), "merge: rank ", r, "'s shard file has no tensor ", name);
      ACCEL_CHECK(it->second.numel() == chunk, "merge: rank ", r, "'s shard of ", name, " has ", it->second.numel(),
                  " elements, the layout says ", chunk);
      if (!full.defined()) full = empty({numel}, {it->second.dtype()});
      int64_t length = chunk_length(numel, chunk, r);
      if (length > 0) full.narrow(0, r * chunk, length).copy_(it->second.reshape({-1}).narrow(0, 0, length));
    }
    merged[name] = full.view(shape);
  }
  return merged;
}

}  // namespace accel::distributed
