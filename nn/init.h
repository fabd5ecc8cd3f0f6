/// @file
/// Parameter initializers (in place, under no-grad), as torch.nn.init. All draw from the
/// Philox generator (the default one unless given), so a seed fixes every weight.
/// Under a SkipInitGuard they do nothing.
#pragma once

#include "core/ops.h"
#include "core/random.h"

namespace accel::nn::init {

void normal_(Tensor& t, double mean = 0.0, double std = 1.0, Generator* generator = nullptr);
void uniform_(Tensor& t, double low = 0.0, double high = 1.0, Generator* generator = nullptr);
void zeros_(Tensor& t);
void ones_(Tensor& t);
/// Glorot: U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)).
void xavier_uniform_(Tensor& t, double gain = 1.0, Generator* generator = nullptr);
void xavier_normal_(Tensor& t, double gain = 1.0, Generator* generator = nullptr);
/// torch.nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform with a=sqrt(5)).
void linear_default_(Tensor& weight, Tensor& bias, Generator* generator = nullptr);

/// While alive, the initializers on this thread leave tensors as they are, drawing nothing
/// (transformers' no_init_weights): for building a model whose weights a checkpoint is about to
/// overwrite, where initializing BERT-base would take seconds. Whoever uses it must initialize
/// what the checkpoint lacks (models/pretrained.cc does), or read uninitialized memory.
class SkipInitGuard {
 public:
  SkipInitGuard();
  ~SkipInitGuard();
  SkipInitGuard(const SkipInitGuard&) = delete;
  SkipInitGuard& operator=(const SkipInitGuard&) = delete;

 private:
  bool previous_;
};

}  // namespace accel::nn::init
