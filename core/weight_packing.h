/// @file
/// Packed weights for CPU inference. oneDNN multiplies fastest when B (the weight, in
/// x @ W^T) is already in its own blocked layout; given a plain one, every call first copies
/// B into that layout. So a CPU GEMM that autograd does not record (linear, linear_gelu and
/// matmul in inference; never a backward pass's) on a B operand it has already multiplied,
/// unchanged, once before (same storage, offset, shape, strides and version) packs B once and
/// keeps the packed copy for every later call. On Sapphire Rapids (2 threads) that made
/// MiniLM's bf16 inference GEMMs 10-17% faster and BERT-base's fp32 ones 1-5%.
///
/// A packed copy is dropped as soon as its source changes (an optimizer step or any in-place
/// write bumps the version), is freed (its entry goes when the next new weight arrives), or is
/// used by a recorded product: training never packs (frozen weights aside), so its memory is
/// untouched. Inference pays one more copy of each weight it multiplies (340 MB for BERT-base
/// in float32). One copy per weight: a product that wants another layout (oneDNN's choice
/// depends on the row count too) multiplies the plain weight. Sources that ZeRO stage 3
/// releases are never packed.
///
/// `ACCEL_PACK_WEIGHTS=0` in the environment, or set_cpu_weight_packing(false), turns it off.
#pragma once

#include <cstddef>

namespace accel {

/// Whether inference GEMMs pack their weights (default: on, unless ACCEL_PACK_WEIGHTS=0).
bool cpu_weight_packing();
/// Turns packing on or off; off also drops every packed copy.
void set_cpu_weight_packing(bool enabled);

struct CpuPackedWeightStats {
  size_t weights = 0;  ///< packed copies kept now
  size_t bytes = 0;    ///< their size
  size_t packs = 0;    ///< packed copies made since the program started
};
CpuPackedWeightStats cpu_packed_weight_stats();
/// Drops every packed copy (they are made again on later inference calls).
void cpu_release_packed_weights();

}  // namespace accel
