// Activation checkpointing: a forward without recording, a backward node that recomputes.
#include "nn/checkpoint.h"

#include "core/autocast.h"
#include "core/autograd/grad_mode.h"
#include "core/autograd/node.h"
#include "core/random.h"

namespace accel::nn {

Tensor checkpoint(const Block& block, const std::vector<Tensor>& inputs) {
  if (!GradMode::is_enabled()) return block(inputs);
  Generator& generator = default_generator();
  const uint64_t seed = generator.seed(), offset = generator.offset();
  // The recompute runs in backward, usually outside the forward's autocast scope: replay it.
  const bool autocast_on = autocast::is_enabled();
  const DType autocast_dtype = autocast::low_precision_dtype();
  Tensor out;
  {
    NoGradGuard no_grad;
    out = block(inputs);
  }
  std::vector<autograd::SavedTensor> saved;
  std::vector<bool> needs_grad;
  std::vector<const Tensor*> edges;
  for (const Tensor& input : inputs) {
    saved.emplace_back(input, "CheckpointBackward");
    needs_grad.push_back(input.defined() && input.requires_grad());
    edges.push_back(&input);
  }
  autograd::set_history(out, "CheckpointBackward", edges,
                        [block, saved, needs_grad, seed, offset, autocast_on, autocast_dtype](const Tensor& grad) {
    std::vector<Tensor> replay_inputs;
    for (size_t i = 0; i < saved.size(); ++i) {
      Tensor input = saved[i].get();
      if (input.defined()) input = input.detach();
      if (needs_grad[i]) input.requires_grad_();
      replay_inputs.push_back(input);
    }
    Generator& gen = default_generator();
    const uint64_t resume_seed = gen.seed(), resume_offset = gen.offset();
    gen.set_state(seed, offset);
    Tensor recomputed;
    {
      EnableGradGuard enable_grad;
      AutocastGuard autocast(autocast_dtype, autocast_on);
      recomputed = block(replay_inputs);
    }
    gen.set_state(resume_seed, resume_offset);
    if (recomputed.requires_grad()) autograd::run_backward(recomputed, grad, false);
    std::vector<Tensor> grads;
    for (size_t i = 0; i < replay_inputs.size(); ++i) grads.push_back(needs_grad[i] ? replay_inputs[i].grad() : Tensor());
    return grads;
  });
  return out;
}

}  // namespace accel::nn
