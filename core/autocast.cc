// Autocast state (thread-local), the per-region cast cache for weights and the inference casts
// kept across regions.
#include "core/autocast.h"

#include <unordered_map>

#include "core/autograd/grad_mode.h"
#include "core/derived_tensor.h"
#include "core/ops.h"

namespace accel {

namespace {
struct State {
  bool enabled = false;
  DType dtype = kBFloat16;
  int depth = 0;
  // fp32 leaf -> its low-precision copy for this autocast region (with autograd history).
  std::unordered_map<const TensorImpl*, std::pair<uint64_t, Tensor>> cast_cache;
  // fp32 leaf -> its low-precision copy made under no-grad (no history), kept across regions.
  std::unordered_map<const TensorImpl*, DerivedTensor> inference_casts;
};
thread_local State state;

// A weight's copy for inference: the kept one while the weight is unchanged. A new entry first
// drops those whose weight's storage is gone, so dead models' copies do not pile up.
Tensor inference_cast(const Tensor& weight) {
  const DType dtype = state.dtype;
  auto cast = [&] { return weight.to(dtype); };
  if (!DerivedTensor::can_keep(weight)) return cast();
  auto [entry, inserted] = state.inference_casts.try_emplace(weight.impl());
  if (inserted) {
    std::erase_if(state.inference_casts,
                  [&](const auto& kv) { return kv.first != weight.impl() && kv.second.is_stale(); });
  }
  return entry->second.get({&weight}, dtype, cast);
}
}  // namespace

AutocastGuard::AutocastGuard(DType low_precision, bool enabled)
    : previous_enabled_(state.enabled), previous_dtype_(state.dtype) {
  ACCEL_CHECK(!enabled || low_precision == kBFloat16 || low_precision == kFloat16,
              "autocast: the low-precision dtype must be bfloat16 or float16, got ", dtype_name(low_precision));
  if (enabled) {
    state.enabled = true;
    state.dtype = low_precision;
  }
  ++state.depth;
}

AutocastGuard::~AutocastGuard() {
  state.enabled = previous_enabled_;
  state.dtype = previous_dtype_;
  if (--state.depth == 0) state.cast_cache.clear();
}

namespace autocast {

bool is_enabled() { return state.enabled; }
DType low_precision_dtype() { return state.dtype; }

Tensor to_low_precision(const Tensor& t) {
  if (!state.enabled || !t.defined() || !t.is_floating_point() || t.dtype() == state.dtype) return t;
  if (!t.is_leaf() || !t.requires_grad()) return t.to(state.dtype);
  // A cast made under no-grad has no history, so it is kept apart from the region's recording
  // casts: reusing it while recording (activation checkpointing re-running a block) would cut
  // the weight off from its gradient.
  if (!GradMode::is_enabled()) return inference_cast(t);
  state.inference_casts.erase(t.impl());  // one 16-bit copy per weight: training's replaces inference's
  auto it = state.cast_cache.find(t.impl());
  if (it != state.cast_cache.end() && it->second.first == t.version() && it->second.second.dtype() == state.dtype) {
    return it->second.second;
  }
  Tensor cast = t.to(state.dtype);
  state.cast_cache[t.impl()] = {t.version(), cast};
  return cast;
}

Tensor to_full_precision(const Tensor& t) {
  if (!state.enabled || !t.defined() || !t.is_floating_point()) return t;
  if (t.dtype() == kFloat16 || t.dtype() == kBFloat16) return t.to(kFloat32);
  return t;
}

void clear_cache() { state.inference_casts.clear(); }

}  // namespace autocast
}  // namespace accel
