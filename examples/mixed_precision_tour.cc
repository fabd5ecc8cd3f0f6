// Mixed precision in accel, quoted by docs/mixed-precision.md: the bit layouts of float32,
// bfloat16 and float16 with their limits, which ops autocast runs in 16 bits and which in
// float32, fp32 master weights, a gradient of 1e-8 that float16 flushes to zero unless the
// loss is scaled, and GradScaler's skip/backoff/growth rules. Runs in milliseconds.
//
//   build/bin/example_mixed_precision_tour
#include <cmath>
#include <cstdio>
#include <iostream>

#include "accelerate/grad_scaler.h"
#include "core/autocast.h"
#include "core/autograd/grad_mode.h"
#include "core/ops.h"
#include "nn/optim.h"

using namespace accel;

namespace {

int failures = 0;
void check(bool ok, const char* claim) {
  if (!ok) {
    std::cerr << "CHECK FAILED: " << claim << "\n";
    ++failures;
  }
}
#define CHECK(cond) check((cond), #cond)

// "s eeeeeeee mmmmmmm": the sign, exponent and mantissa fields of a bit pattern.
std::string fields(uint32_t bits, int exponent_bits, int mantissa_bits) {
  std::string out;
  int total = 1 + exponent_bits + mantissa_bits;
  for (int i = total - 1; i >= 0; --i) {
    out += ((bits >> i) & 1u) ? '1' : '0';
    if (i == total - 1 || i == mantissa_bits) out += ' ';
  }
  return out;
}

}  // namespace

int main() {
  try {
    // ---- bit layouts ----
    // [snippet:bits]
    const float pi = 3.14159265f;
    std::printf("fp32 %s = %.9g\n", fields(float_bits(pi), 8, 23).c_str(), pi);
    std::printf("bf16 %s = %.9g\n", fields(BFloat16(pi).bits, 8, 7).c_str(), float(BFloat16(pi)));
    std::printf("fp16 %s = %.9g\n", fields(Half(pi).bits, 5, 10).c_str(), float(Half(pi)));
    std::printf("      %-14s %-14s %-14s %s\n", "max", "min normal", "min subnormal", "eps (spacing at 1)");
    std::printf("fp16  %-14.6g %-14.6g %-14.6g %.6g\n", float(Half::from_bits(0x7bff)),
                float(Half::from_bits(0x0400)), float(Half::from_bits(0x0001)), float(Half::from_bits(0x1400)));
    std::printf("bf16  %-14.6g %-14.6g %-14.6g %.6g\n", float(BFloat16::from_bits(0x7f7f)),
                float(BFloat16::from_bits(0x0080)), float(BFloat16::from_bits(0x0001)),
                float(BFloat16::from_bits(0x3c00)));
    // [end]
    CHECK(float(Half::from_bits(0x7bff)) == 65504.0f);
    CHECK(float(Half::from_bits(0x0001)) == std::ldexp(1.0f, -24));
    CHECK(float(Half::from_bits(0x0400)) == std::ldexp(1.0f, -14));
    CHECK(float(Half::from_bits(0x1400)) == std::ldexp(1.0f, -10));
    CHECK(float(BFloat16::from_bits(0x3c00)) == std::ldexp(1.0f, -7));
    CHECK(float(BFloat16::from_bits(0x0080)) == std::ldexp(1.0f, -126));

    // ---- autocast: which ops run in 16 bits ----
    // [snippet:autocast]
    manual_seed(0);
    Tensor x = randn({4, 8});                                    // (B=4, in=8) activations, fp32
    Tensor W = randn({16, 8}).requires_grad_();                  // (out=16, in=8) fp32 master weight
    Tensor gamma = ones({16}).requires_grad_(), beta = zeros({16}).requires_grad_();
    Tensor labels = from_vector<int64_t>({0, 3, 7, 15});
    Tensor loss;
    {
      AutocastGuard autocast(kBFloat16);
      Tensor h = linear(x, W);                        // GEMM: inputs cast to bf16, fp32 accumulation
      Tensor n = layer_norm(h, {16}, gamma, beta);    // fp32: mean and variance need the precision
      Tensor p = softmax(h, -1);                      // fp32: exp and a sum over the row
      Tensor r = h * 2.0;                             // other ops follow their inputs: bf16
      Tensor s = h + n;                               // type promotion: bf16 + fp32 -> fp32
      loss = cross_entropy(h, labels);                // fp32: the log-sum-exp over the row
      std::cout << "linear " << h.dtype() << ", layer_norm " << n.dtype() << ", softmax " << p.dtype() << ", h * 2 "
                << r.dtype() << ", h + n " << s.dtype() << ", cross_entropy " << loss.dtype() << "\n";
    }
    loss.backward();
    std::cout << "W " << W.dtype() << ", W.grad " << W.grad().dtype() << "\n";  // the master copy stays fp32
    // [end]
    CHECK(W.grad().dtype() == kFloat32 && loss.dtype() == kFloat32);
    {
      AutocastGuard autocast(kFloat16);
      CHECK(linear(x, W).dtype() == kFloat16);
      CHECK(matmul(x, W.t()).dtype() == kFloat16);
      CHECK(softmax(x.to(kFloat16), -1).dtype() == kFloat32);
    }
    CHECK(linear(x, W).dtype() == kFloat32);  // outside the guard: fp32 again

    // ---- a gradient of 1e-8 in fp16, with and without loss scaling ----
    // [snippet:underflow]
    Tensor w = full({1, 4}, 0.5).requires_grad_();  // fp32 master weight (out=1, in=4)
    Tensor inputs = ones({8, 4});                   // (B=8, in=4)
    auto weight_grad = [&](double loss_scale) {
      w.set_grad(Tensor());
      Tensor out;
      {
        AutocastGuard autocast(kFloat16);
        out = linear(inputs, w);  // (8, 1) in fp16; its backward runs in fp16 too
      }
      // dloss/dout = 1e-8 per element: in fp32 it is fine, but it enters the fp16 backward.
      Tensor loss = (out.to(kFloat32) * 1e-8).sum();
      (loss * loss_scale).backward();
      return w.grad() / loss_scale;  // unscale in fp32, as GradScaler does
    };
    std::cout << "true dloss/dw = 8 * 1e-8 = 8e-08\n";
    std::cout << "no scaling:   " << weight_grad(1.0).to_vector<float>()[0] << "\n";    // 1e-8 -> fp16 -> 0
    std::cout << "scale 2^16:   " << weight_grad(65536.0).to_vector<float>()[0] << "\n";  // 6.5536e-4 fits fp16
    std::cout << "fp16(1e-8) = " << float(Half(1e-8f)) << ", fp16(65536 * 1e-8) = " << float(Half(65536 * 1e-8f))
              << "\n";
    // [end]
    CHECK(weight_grad(1.0).to_vector<float>()[0] == 0.0f);
    CHECK(std::abs(weight_grad(65536.0).to_vector<float>()[0] - 8e-8f) < 8e-8f * 1e-3f);

    // ---- GradScaler: skip, back off, grow ----
    // [snippet:scaler]
    Tensor param = ones({2}).requires_grad_();
    nn::SGD sgd({param}, nn::SGDOptions{.lr = 0.1});
    GradScaler scaler(GradScalerOptions{.init_scale = 65536.0, .growth_interval = 3});  // PyTorch's default: 2000
    for (float g : {1.0f, 1.0f, INFINITY, 1.0f, 1.0f, 1.0f}) {
      sgd.zero_grad();
      Tensor loss = (param * g).sum();       // dloss/dparam = g
      scaler.scale(loss).backward();         // param.grad = g * scale
      bool stepped = scaler.step(sgd);       // unscale_, then step unless some gradient is inf/NaN
      scaler.update();                       // inf: scale *= 0.5; 3 clean steps in a row: scale *= 2
      std::printf("grad %-4g stepped %d  param %.2f  next scale %g\n", g, stepped, param.to_vector<float>()[0],
                  scaler.get_scale());
    }
    // [end]
    CHECK(scaler.get_scale() == 65536.0);  // 65536 -> inf: 32768 -> three clean steps: 65536
    CHECK(std::abs(param.to_vector<float>()[0] - 0.5f) < 1e-6f);  // 5 of the 6 steps were taken
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  if (failures > 0) return 1;
  std::cout << "mixed_precision_tour: all checks passed\n";
  return 0;
}
