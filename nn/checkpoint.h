/// @file
/// Activation checkpointing (torch.utils.checkpoint): run a block without keeping its
/// activations, and recompute them during backward. Memory drops from every intermediate of
/// the block to its inputs; the cost is one more forward of the block.
#pragma once

#include <functional>
#include <vector>

#include "core/ops.h"

namespace accel::nn {

using Block = std::function<Tensor(const std::vector<Tensor>&)>;

/// Returns block(inputs). When recording, the result's backward re-runs the block (with the
/// default generator rewound, so dropout draws the same masks) and backpropagates through
/// the re-run: parameters inside the block get their gradients then, inputs get theirs from
/// the node. The re-run uses the forward's autocast state, wherever backward is called.
Tensor checkpoint(const Block& block, const std::vector<Tensor>& inputs);

}  // namespace accel::nn
