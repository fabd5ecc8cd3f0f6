// How to add an op, end to end, quoted by docs/tensors.md: softplus(x) = log(1 + exp(beta x)) / beta
// with its kernel signature and dispatch slot, a CPU kernel that switches on dtype, the
// backward rule, and the front end that checks, dispatches and records. In the tree the four
// pieces live in four files (named above each); here they sit in one program so that it runs.
// main() checks the forward against a float64 reference and the backward against finite
// differences, as tests/core/test_gradcheck.cc does for every op.
//
//   build/bin/example_custom_op
#include <algorithm>
#include <cmath>
#include <iostream>

#include "backends/cpu/loops.h"
#include "core/autograd/node.h"
#include "core/kernels.h"
#include "core/ops.h"
#include "core/ops/op_utils.h"

// ---- 1. the kernel signature and its slot (in the tree: core/kernels.h) ----
// [snippet:slot]
namespace accel::kernels {
// out = log(1 + exp(beta * in)) / beta; in and out have one shape and dtype, any strides.
using SoftplusFn = void(const Tensor& in, double beta, const Tensor& out);
inline constinit KernelSlot<SoftplusFn> softplus{"softplus", "K softplus"};
}  // namespace accel::kernels
// [end]

// ---- 2. the CPU kernel (in the tree: backends/cpu/pointwise.cc) ----
// [snippet:kernel]
namespace accel::cpu {
namespace {
void softplus_kernel(const Tensor& in, double beta, const Tensor& out) {
  visit_floating(in.dtype(), "softplus", "cpu", [&]<typename T>() {
    using M = opmath_t<T>;  // float for Half and BFloat16: compute wide, round once at the store
    const M b = static_cast<M>(beta);
    map_elementwise<T, T>(out, [b](T v) {
      M z = b * M(v);
      return T((std::max(z, M(0)) + std::log1p(std::exp(-std::abs(z)))) / b);  // no overflow for large z
    }, {&in});
  });
}
}  // namespace
ACCEL_REGISTER_KERNEL(softplus, DeviceType::CPU, softplus_kernel);
}  // namespace accel::cpu
// [end]

// ---- 3. the backward rule (in the tree: core/autograd/derivatives_pointwise.cc) ----
// [snippet:backward]
namespace accel::autograd::record {
void softplus(Tensor& out, const Tensor& x, double beta) {
  if (!any_requires_grad({&x})) return;   // grad mode off or no input needs grad: no node
  SavedTensor saved_x(x, "SoftplusBackward");  // a detached alias plus x's version now
  set_history(out, "SoftplusBackward", {&x}, [saved_x, beta](const Tensor& grad) {
    // d/dx softplus(x) = sigmoid(beta x); one gradient per input, in input order.
    return std::vector<Tensor>{grad * sigmoid(saved_x.get() * beta)};
  });
}
}  // namespace accel::autograd::record
// [end]

// ---- 4. the front end (in the tree: core/ops/pointwise.cc, declared in core/ops.h) ----
// [snippet:frontend]
namespace accel {
Tensor softplus(const Tensor& x, double beta = 1.0) {
  detail::check_defined(x, "softplus", "input");
  detail::check_floating(x, "softplus");
  ACCEL_CHECK(beta > 0, "softplus: beta must be positive, got ", beta);
  Tensor out = Tensor::empty(x.sizes(), x.dtype(), x.device());
  kernels::softplus(out.device(), x, beta, out);  // the (softplus, device) slot; the kernel switches on dtype
  autograd::record::softplus(out, x, beta);        // attaches SoftplusBackward when x requires grad
  return out;
}
}  // namespace accel
// [end]

using namespace accel;

int main() {
  int failures = 0;
  auto check = [&](bool ok, const char* claim) {
    if (!ok) {
      std::cerr << "CHECK FAILED: " << claim << "\n";
      ++failures;
    }
  };
  try {
    // [snippet:use]
    Tensor x = from_vector<double>({-30.0, -1.0, 0.0, 1.0, 30.0}).requires_grad_();
    Tensor y = softplus(x);                  // float64 in, float64 out
    y.sum().backward();                      // dy/dx = sigmoid(x)
    std::cout << "softplus(x) =\n" << y.detach() << "\nx.grad =\n" << x.grad() << "\ngrad_fn: " << y.grad_fn()->name()
              << "\n";
    Tensor half = softplus(x.detach().to(kBFloat16).slice(0, 0, 5, 2));  // bf16, strided view
    std::cout << "bf16, every other element:\n" << half << "\n";
    // [end]

    // The forward against a float64 reference.
    std::vector<double> xs = x.detach().to_vector<double>(), ys = y.detach().to_vector<double>();
    bool forward_ok = true;
    for (size_t i = 0; i < xs.size(); ++i) {
      forward_ok = forward_ok && std::abs(ys[i] - std::log1p(std::exp(xs[i]))) < 1e-12;
    }
    check(forward_ok, "softplus matches log1p(exp(x)) in float64");

    // The backward against central finite differences in float64 (beta = 2 for a change).
    Tensor p = from_vector<double>({-1.5, -0.2, 0.3, 2.0}).requires_grad_();
    softplus(p, 2.0).sum().backward();
    std::vector<double> analytic = p.grad().to_vector<double>();
    bool backward_ok = true;
    for (size_t i = 0; i < analytic.size(); ++i) {
      const double h = 1e-6;
      std::vector<double> plus = p.detach().to_vector<double>(), minus = plus;
      plus[i] += h;
      minus[i] -= h;
      double numeric = (softplus(from_vector<double>(plus), 2.0).sum().item<double>() -
                        softplus(from_vector<double>(minus), 2.0).sum().item<double>()) / (2 * h);
      backward_ok = backward_ok && std::abs(numeric - analytic[i]) < 1e-7;
    }
    check(backward_ok, "SoftplusBackward matches finite differences");
    check(half.dtype() == kBFloat16 && half.numel() == 3, "bf16 strided input works");

    // [snippet:errors]
    try {
      softplus(arange(3));  // int64: refused by the front end, before any kernel runs
    } catch (const Error& e) {
      std::cout << e.what() << "\n";
    }
    try {  // a device with no kernel in the slot: the error names the op and the device
      Tensor in = zeros({2});
      kernels::softplus(Device(DeviceType::CUDA, 0), in, 1.0, in);
    } catch (const Error& e) {
      std::cout << e.what() << "\n";
    }
    // [end]
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  if (failures > 0) return 1;
  std::cout << "custom_op: all checks passed\n";
  return 0;
}
