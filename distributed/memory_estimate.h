/// @file
/// Per-rank memory of the model states (parameters, gradients, optimizer states) under ZeRO,
/// by the formulas of Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training
/// Trillion Parameter Models", sections 3 and 5. With Ψ parameters over Nd ranks and p, g, K
/// bytes per parameter of weights, gradients and optimizer state:
///   stage 0 (plain data parallel): (p + g + K) Ψ
///   stage 1 (optimizer states sharded): (p + g) Ψ + K Ψ / Nd
///   stage 2 (+ gradients sharded):      p Ψ + (g + K) Ψ / Nd
///   stage 3 (+ parameters sharded):     (p + g + K) Ψ / Nd
/// A sharded state holds ceil(Ψ / Nd) elements per rank (the last shard padded), so the byte
/// counts are whole numbers and match what a rank allocates. Pure arithmetic, free of MPI:
/// `accel estimate-memory` prints it, and ZeRO's per-rank report compares against it. It does
/// not count activations, temporary buffers, communication buckets or fragmentation.
#pragma once

#include <cstdint>
#include <string>

namespace accel::distributed {

/// Bytes of model state per parameter.
struct StateBytesPerParameter {
  int64_t parameter;  ///< p: the weights forward and backward read
  int64_t gradient;   ///< g
  int64_t optimizer;  ///< K: Adam's m and v, plus the fp32 master weights under mixed precision
};

/// Adam's bytes per parameter for a training dtype:
///   "fp32":         p = g = 4, K = 8 (m + v; the fp32 weights are the masters)
///   "fp16", "bf16": mixed-precision Adam, the paper's case: p = g = 2, K = 12 (fp32 master + m + v)
/// Throws for any other name.
StateBytesPerParameter adam_state_bytes(const std::string& dtype);

struct ModelStateMemory {
  int zero_stage = 0;
  int64_t parameter_bytes = 0, gradient_bytes = 0, optimizer_bytes = 0;  ///< per rank
  int64_t total_bytes() const { return parameter_bytes + gradient_bytes + optimizer_bytes; }
};

/// Per-rank model-state bytes for num_parameters (Ψ >= 1) over num_ranks (Nd >= 1) at ZeRO
/// stage 0-3. Throws on arguments out of range.
ModelStateMemory zero_model_state_memory(int64_t num_parameters, int64_t num_ranks, int zero_stage,
                                         const StateBytesPerParameter& bytes);

/// A parameter count as people write it: "7500000000", "7.5e9", "7.5B", "110M", "22.7M", "340k"
/// (suffixes k/K = 1e3, M = 1e6, B/G = 1e9, T = 1e12), rounded to a whole number. Throws for
/// text that is not such a number or for a count below 1.
int64_t parse_parameter_count(const std::string& text);

}  // namespace accel::distributed
