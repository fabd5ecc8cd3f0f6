// Initializers: draw a fresh tensor and copy it in, keeping the parameter's identity.
#include "nn/init.h"

#include <cmath>

#include "core/autograd/grad_mode.h"

namespace accel::nn::init {

namespace {
thread_local bool skipping = false;

void assign(Tensor& t, const Tensor& values) {
  NoGradGuard no_grad;
  t.copy_(values);
}
// fan_in, fan_out of a (out, in, ...) weight, as torch.nn.init._calculate_fan_in_and_fan_out.
std::pair<double, double> fans(const Tensor& t) {
  ACCEL_CHECK(t.dim() >= 2, "init: fan in and fan out need a tensor with at least 2 dims, got shape ", t.shape_string());
  double receptive = 1;
  for (int64_t d = 2; d < t.dim(); ++d) receptive *= static_cast<double>(t.size(d));
  return {static_cast<double>(t.size(1)) * receptive, static_cast<double>(t.size(0)) * receptive};
}
}  // namespace

SkipInitGuard::SkipInitGuard() : previous_(skipping) { skipping = true; }
SkipInitGuard::~SkipInitGuard() { skipping = previous_; }

void normal_(Tensor& t, double mean, double std, Generator* generator) {
  if (skipping) return;
  assign(t, randn(t.sizes(), {kFloat32, t.device()}, generator) * std + mean);
}

void uniform_(Tensor& t, double low, double high, Generator* generator) {
  if (skipping) return;
  assign(t, rand(t.sizes(), {kFloat32, t.device()}, generator) * (high - low) + low);
}

void zeros_(Tensor& t) {
  if (skipping) return;
  NoGradGuard no_grad;
  t.zero_();
}

void ones_(Tensor& t) {
  if (skipping) return;
  NoGradGuard no_grad;
  t.fill_(1);
}

void xavier_uniform_(Tensor& t, double gain, Generator* generator) {
  auto [fan_in, fan_out] = fans(t);
  double bound = gain * std::sqrt(6.0 / (fan_in + fan_out));
  uniform_(t, -bound, bound, generator);
}

void xavier_normal_(Tensor& t, double gain, Generator* generator) {
  auto [fan_in, fan_out] = fans(t);
  normal_(t, 0.0, gain * std::sqrt(2.0 / (fan_in + fan_out)), generator);
}

void linear_default_(Tensor& weight, Tensor& bias, Generator* generator) {
  double bound = 1.0 / std::sqrt(fans(weight).first);
  uniform_(weight, -bound, bound, generator);
  if (bias.defined()) uniform_(bias, -bound, bound, generator);
}

}  // namespace accel::nn::init
