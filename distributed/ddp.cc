// DistributedDataParallel's Reducer (see ddp.h): bucket layout, the per-parameter hook, the
// in-order bucket launch, and the end-of-backward callback that waits, checks for unused
// parameters and copies the averaged gradients back.
#include "distributed/ddp.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <unordered_set>

#include "core/autograd/node.h"
#include "core/ops.h"
#include "core/trace.h"

namespace accel::distributed {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point from, Clock::time_point to) {
  return std::max(0.0, std::chrono::duration<double>(to - from).count());
}

// A fingerprint of the parameter list (count, elements, shapes and dtypes) to compare ranks.
Tensor parameter_signature(const std::vector<Tensor>& parameters) {
  uint64_t hash = 1469598103934665603ull;  // FNV-1a over shapes and dtypes
  int64_t numel = 0;
  auto mix = [&hash](uint64_t value) { hash = (hash ^ value) * 1099511628211ull; };
  for (const Tensor& p : parameters) {
    numel += p.numel();
    mix(static_cast<uint64_t>(p.dtype()));
    for (int64_t size : p.sizes()) mix(static_cast<uint64_t>(size));
  }
  return from_vector<int64_t>({static_cast<int64_t>(parameters.size()), numel, static_cast<int64_t>(hash)});
}

}  // namespace

struct DistributedDataParallel::Reducer : std::enable_shared_from_this<Reducer> {
  struct Slot {
    std::string name;
    Tensor parameter;
    int64_t bucket = 0;
    int64_t offset = 0;  // in elements, into the bucket's buffer
    bool ready = false;  // its gradient is in the bucket (this pass)
  };
  struct Bucket {
    std::vector<int64_t> slots;
    Tensor buffer;  // (numel) the flat gradients of its parameters, in slot order
    int64_t pending = 0;  // gradients still missing this pass
    std::shared_ptr<Work> work;
    Clock::time_point launched;
    std::optional<Clock::time_point> completed;
    trace::AsyncSpan span;  // from launch until completion is observed
  };

  std::shared_ptr<ProcessGroup> group;
  Device device = kCPU;  // the parameters': where the small flag and fingerprint tensors go
  DDPOptions options;
  std::vector<Slot> slots;
  std::vector<Bucket> buckets;
  bool sync = true;
  bool in_backward = false;
  int64_t next_launch = 0;  // buckets launch in index order: the next one to go
  std::vector<BucketTiming> timings;

  Tensor slot_view(const Slot& slot) {
    return buckets[slot.bucket].buffer.narrow(0, slot.offset, slot.parameter.numel()).view(slot.parameter.sizes());
  }

  // The hook of slot `index`: its gradient has been accumulated into .grad.
  void on_gradient(int64_t index) {
    if (!sync) return;
    if (!in_backward) begin_backward();
    Slot& slot = slots[index];
    ACCEL_CHECK(!slot.ready, "DDP: parameter ", slot.name, " received a second gradient before the previous "
                "backward pass finished; did an earlier backward() throw? The gradients are no longer in sync "
                "across processes: stop this run");
    copy_into_slot(slot, slot.parameter.grad());
    slot.ready = true;
    if (--buckets[slot.bucket].pending == 0) launch_ready_buckets();
    poll();
  }

  // The gradient into the slot's place in its bucket, unless it already is that place (a
  // bucket view kept from the last pass and accumulated into in place).
  void copy_into_slot(const Slot& slot, const Tensor& grad) {
    Tensor view = slot_view(slot);
    if (grad.data_ptr() != view.data_ptr()) view.copy_(grad);
  }

  void begin_backward() {
    in_backward = true;
    next_launch = 0;
    for (Slot& slot : slots) slot.ready = false;
    for (Bucket& bucket : buckets) {
      bucket.pending = static_cast<int64_t>(bucket.slots.size());
      bucket.work = nullptr;
      bucket.completed.reset();
    }
    std::weak_ptr<Reducer> weak = weak_from_this();
    autograd::queue_callback([weak] {
      if (auto reducer = weak.lock()) reducer->finish_backward();
    });
  }

  void launch_ready_buckets() {
    while (next_launch < static_cast<int64_t>(buckets.size()) && buckets[next_launch].pending == 0) {
      const int64_t index = next_launch++;
      Bucket& bucket = buckets[index];
      bucket.span = trace::AsyncSpan("ddp.bucket_all_reduce", "ddp",
                                     {{"bucket", index}, {"bytes", static_cast<int64_t>(bucket.buffer.nbytes())}});
      bucket.launched = Clock::now();
      bucket.work = group->all_reduce(bucket.buffer, Reduce::Avg);
    }
  }

  // Notes completions as they happen (and lets MPI progress its non-blocking collectives).
  void poll() {
    for (int64_t i = 0; i < next_launch; ++i) {
      Bucket& bucket = buckets[i];
      if (!bucket.completed && bucket.work->is_completed()) {
        bucket.completed = Clock::now();
        bucket.span.end();
      }
    }
  }

  // Zero-fills (or fills with an earlier accumulated gradient) the slots no hook filled, or
  // fails naming them. Returns, per slot, whether this rank had any gradient for it.
  std::vector<int32_t> fill_unused_slots() {
    std::vector<std::string> unused;
    std::vector<int32_t> used(slots.size(), 1);
    for (size_t i = 0; i < slots.size(); ++i) {
      Slot& slot = slots[i];
      if (slot.ready) continue;
      unused.push_back(slot.name);
      if (!options.find_unused_parameters) continue;
      const Tensor& grad = slot.parameter.grad();
      if (grad.defined()) {
        copy_into_slot(slot, grad);
      } else {
        slot_view(slot).zero_();
        used[i] = 0;
      }
      slot.ready = true;
      buckets[slot.bucket].pending -= 1;
    }
    if (!unused.empty() && !options.find_unused_parameters) {
      std::reverse(unused.begin(), unused.end());  // slots run newest first; name them in model order
      std::string names;
      for (size_t i = 0; i < unused.size() && i < 10; ++i) names += (i ? ", " : "") + unused[i];
      if (unused.size() > 10) names += ", ... (" + std::to_string(unused.size()) + " in all)";
      ACCEL_FAIL("DDP: on rank ", group->rank(), ", parameter(s) ", names, " received no gradient in this backward "
                 "pass while others did. If the model skips them on purpose (a branch not taken), set "
                 "find_unused_parameters (AcceleratorOptions::ddp); otherwise make the loss depend on them");
    }
    return used;
  }

  // The end of a synchronizing backward pass (engine callback; like the hooks, it runs with
  // grad mode off).
  void finish_backward() {
    const Clock::time_point backward_end = Clock::now();
    trace::Span span("ddp.finish_backward", "ddp");
    in_backward = false;
    std::vector<int32_t> used = fill_unused_slots();
    launch_ready_buckets();
    if (options.find_unused_parameters) {
      // A parameter no rank used keeps no gradient, as in single-process training.
      Tensor anywhere = from_vector<int32_t>(used).to(device);
      group->all_reduce(anywhere, Reduce::Max)->wait();
      used = anywhere.to_vector<int32_t>();
    }
    timings.clear();
    for (Bucket& bucket : buckets) {
      bucket.work->wait();
      if (!bucket.completed) bucket.completed = Clock::now();
      bucket.span.end();
      timings.push_back({static_cast<int64_t>(bucket.buffer.nbytes()), static_cast<int64_t>(bucket.slots.size()),
                         seconds_between(bucket.launched, *bucket.completed),
                         seconds_between(bucket.launched, std::min(*bucket.completed, backward_end))});
      for (int64_t index : bucket.slots) {
        Slot& slot = slots[index];
        if (!used[index]) continue;
        Tensor average = slot_view(slot);
        if (options.gradient_as_bucket_view) {
          slot.parameter.set_grad(average);
        } else if (slot.parameter.grad().defined()) {
          slot.parameter.mutable_grad().copy_(average);
        } else {
          slot.parameter.set_grad(average);
        }
      }
      bucket.work = nullptr;
    }
  }
};

DistributedDataParallel::DistributedDataParallel(const nn::Module& module, std::shared_ptr<ProcessGroup> group,
                                                 DDPOptions options)
    : reducer_(std::make_shared<Reducer>()) {
  ACCEL_CHECK(options.bucket_bytes > 0, "DDP: bucket_bytes must be positive, got ", options.bucket_bytes);
  Reducer& r = *reducer_;
  r.group = std::move(group);
  r.options = options;

  // Trainable parameters, each once (tied weights appear under several names), newest first.
  std::vector<std::pair<std::string, Tensor>> parameters;
  std::unordered_set<const TensorImpl*> seen;
  for (auto& [name, p] : module.named_parameters()) {
    if (p.requires_grad() && seen.insert(p.impl()).second) parameters.emplace_back(name, p);
  }
  std::reverse(parameters.begin(), parameters.end());

  std::vector<Tensor> tensors;
  for (auto& [name, p] : parameters) tensors.push_back(p);
  if (!tensors.empty()) r.device = tensors.front().device();
  Tensor local = parameter_signature(tensors).to(r.device);
  Tensor all = empty({r.group->size() * 3}, {kInt64, r.device});
  r.group->all_gather(local, all)->wait();
  std::vector<int64_t> signatures = all.to_vector<int64_t>();
  for (int rank = 1; rank < r.group->size(); ++rank) {
    ACCEL_CHECK(std::equal(signatures.begin(), signatures.begin() + 3, signatures.begin() + 3 * rank),
                "DDP: the models differ across processes: rank 0 has ", signatures[0], " parameters (", signatures[1],
                " elements), rank ", rank, " has ", signatures[3 * rank], " (", signatures[3 * rank + 1],
                " elements), or their shapes differ. Every process must build the same model");
  }

  // Buckets: consecutive parameters of one dtype and device, closed once they reach bucket_bytes.
  int64_t bucket_numel = 0, bucket_bytes = 0;
  auto close_bucket = [&] {
    if (bucket_numel == 0) return;
    const Tensor& first = r.slots[r.buckets.back().slots.front()].parameter;
    r.buckets.back().buffer = zeros({bucket_numel}, {first.dtype(), first.device()});
    bucket_numel = bucket_bytes = 0;
  };
  for (auto& [name, p] : parameters) {
    const bool fits = !r.buckets.empty() && bucket_numel > 0 && bucket_bytes < options.bucket_bytes;
    const bool same_kind = fits && r.slots.back().parameter.dtype() == p.dtype() &&
                           r.slots.back().parameter.device() == p.device();
    if (!same_kind) {
      close_bucket();
      r.buckets.emplace_back();
    }
    r.slots.push_back({name, p, static_cast<int64_t>(r.buckets.size()) - 1, bucket_numel});
    r.buckets.back().slots.push_back(static_cast<int64_t>(r.slots.size()) - 1);
    bucket_numel += p.numel();
    bucket_bytes += static_cast<int64_t>(p.nbytes());
  }
  close_bucket();

  std::weak_ptr<Reducer> weak = reducer_;
  for (size_t i = 0; i < r.slots.size(); ++i) {
    r.slots[i].parameter.register_post_accumulate_grad_hook([weak, i](const Tensor&) {
      if (auto reducer = weak.lock()) reducer->on_gradient(static_cast<int64_t>(i));
    });
  }
}

DistributedDataParallel::~DistributedDataParallel() = default;

void DistributedDataParallel::set_require_backward_grad_sync(bool sync) { reducer_->sync = sync; }
bool DistributedDataParallel::require_backward_grad_sync() const { return reducer_->sync; }
int64_t DistributedDataParallel::num_buckets() const { return static_cast<int64_t>(reducer_->buckets.size()); }

std::vector<std::string> DistributedDataParallel::bucket_parameter_names(int64_t bucket) const {
  ACCEL_CHECK(bucket >= 0 && bucket < num_buckets(), "DDP: bucket ", bucket, " does not exist (", num_buckets(),
              " buckets)");
  std::vector<std::string> names;
  for (int64_t index : reducer_->buckets[bucket].slots) names.push_back(reducer_->slots[index].name);
  return names;
}

const std::vector<BucketTiming>& DistributedDataParallel::last_bucket_timings() const { return reducer_->timings; }

}  // namespace accel::distributed
