// Autocast state (thread-local) and the per-region cast cache for weights.
#include "core/autocast.h"

#include <unordered_map>

#include "core/autograd/grad_mode.h"
#include "core/ops.h"

namespace accel {

namespace {
struct State {
  bool enabled = false;
  DType dtype = kBFloat16;
  int depth = 0;
  // fp32 leaf -> its low-precision copy for this autocast region (with autograd history).
  std::unordered_map<const TensorImpl*, std::pair<uint64_t, Tensor>> cast_cache;
};
thread_local State state;
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
  // Weights are cast once per region, but only while recording: a cast made under no-grad
  // has no history, and reusing it later (activation checkpointing re-running a block)
  // would cut the weights off from their gradients.
  bool cacheable = t.is_leaf() && t.requires_grad() && GradMode::is_enabled();
  if (!cacheable) return t.to(state.dtype);
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

}  // namespace autocast
}  // namespace accel
