/// @file
/// The CPU GEMM's cache of weights in oneDNN's blocked layout (core/weight_packing.h says
/// when a B operand is packed and when its copy is dropped).
#pragma once

#include <optional>

#include <dnnl.hpp>

#include "core/tensor.h"

namespace accel::cpu {

struct PackedWeight {
  dnnl::memory memory;  ///< the packed B, viewing `bytes`
  Tensor bytes;         ///< owns the packed copy for as long as a call uses it
};

/// Whether an inference GEMM's B (B, K, N) may have a packed copy: one matrix (batch 1 or
/// broadcast), packing on, and a source that ZeRO does not release.
bool may_pack(const Tensor& b);

/// B packed as `packed` describes, when the cache holds it or this is B's second use at its
/// current version (it packs now, from `plain`, B's own layout); nullopt when B is to be
/// multiplied as it is: a first use, or B already packed in another layout.
std::optional<PackedWeight> packed_weight(const Tensor& b, const dnnl::memory::desc& plain,
                                          const dnnl::memory::desc& packed, const dnnl::engine& engine);

/// Drops B's packed copy, if any: a Transient use (training again) keeps none.
void forget_packed_weight(const Tensor& b);

}  // namespace accel::cpu
