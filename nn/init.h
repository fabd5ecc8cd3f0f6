/// @file
/// Parameter initializers (in place, under no-grad), as torch.nn.init. All draw from the
/// Philox generator (the default one unless given), so a seed fixes every weight.
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

}  // namespace accel::nn::init
