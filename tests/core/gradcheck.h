// gradcheck.h: gradcheck(), a float64 finite-difference check of backward rules, in the
// manner of torch.autograd.gradcheck. It reduces a function's output to the scalar
// L = sum(fn(inputs) * w) with a fixed random weight w (so every output element, not just
// their sum, is tested), takes dL/dinput from backward(), and compares it with central
// differences (L(x + eps) - L(x - eps)) / (2 eps), perturbing one input element at a time.
// What it is not: a check of forward values (the golden tests pin those), of second
// derivatives, or of non-float64 dtypes (eps 1e-6 is meaningless in float32).
//
//   Tensor a = randn({3, 4}, kFloat64, &gen).requires_grad_();
//   EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return tanh(in[0]); }, {a}));
//
// Inputs that require grad must be float64 leaves; they may be strided views (transposed,
// sliced), which are perturbed element by element through their own strides. Overlapping
// inputs (an expand with stride 0) are refused, as torch does: a perturbation there moves
// several logical elements at once. Expand inside fn instead. Inputs that do not require
// grad (index tensors, masks, float constants) are passed through untouched. fn runs many
// times; anything random in it must be reseeded inside fn.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <iomanip>
#include <string>
#include <vector>

#include "core/autograd/grad_mode.h"
#include "core/autograd/node.h"
#include "core/ops.h"
#include "core/random.h"
#include "tests/core/tensor_compare.h"

using GradcheckFn = std::function<accel::Tensor(const std::vector<accel::Tensor>&)>;

struct GradcheckOptions {
  double eps = 1e-6;   // central-difference step
  double atol = 1e-5;  // torch.autograd.gradcheck's defaults
  double rtol = 1e-3;
  int max_reported = 5;  // mismatching elements listed in a failure message
};

namespace gradcheck_detail {

// A one-element view of `t` at row-major position `flat` (t itself for a 0-d tensor).
inline accel::Tensor element_view(const accel::Tensor& t, int64_t flat) {
  accel::NoGradGuard no_grad;
  std::vector<int64_t> index(t.dim());
  for (int64_t d = t.dim() - 1; d >= 0; --d) {
    index[d] = flat % t.size(d);
    flat /= t.size(d);
  }
  accel::Tensor element = t;
  for (int64_t i : index) element = element.select(0, i);
  return element;
}

// L = sum(fn(inputs) * w), as a double.
inline double weighted_loss(const GradcheckFn& fn, const std::vector<accel::Tensor>& inputs,
                            const accel::Tensor& weight) {
  accel::NoGradGuard no_grad;
  return accel::sum(fn(inputs) * weight).item_double();
}

}  // namespace gradcheck_detail

inline ::testing::AssertionResult gradcheck(const GradcheckFn& fn, const std::vector<accel::Tensor>& inputs,
                                            const GradcheckOptions& options = {}) {
  using namespace accel;
  using gradcheck_detail::element_view;

  // ---- the inputs: float64 leaves without overlapping memory ----
  bool any_grad = false;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = inputs[i];
    if (!t.defined() || !t.requires_grad()) continue;
    any_grad = true;
    if (t.dtype() != kFloat64) {
      return ::testing::AssertionFailure() << "input " << i << " requires grad but has dtype " << t.dtype()
                                           << "; gradcheck needs float64";
    }
    if (!t.is_leaf()) {
      return ::testing::AssertionFailure() << "input " << i << " requires grad but is not a leaf (computed by "
                                           << t.grad_fn()->name() << "); build views inside fn instead";
    }
    for (int64_t d = 0; d < t.dim(); ++d) {
      if (t.size(d) > 1 && t.stride(d) == 0) {
        return ::testing::AssertionFailure() << "input " << i << " of shape " << t.shape_string()
                                             << " has overlapping memory (stride 0 in dim " << d
                                             << "); expand inside fn instead";
      }
    }
  }
  if (!any_grad) return ::testing::AssertionFailure() << "no input requires grad: nothing to check";

  // ---- analytic gradients: backward of L = sum(out * w) ----
  for (const Tensor& t : inputs) {
    if (t.defined() && t.requires_grad()) Tensor(t).set_grad(Tensor());
  }
  Tensor out = fn(inputs);
  if (!out.defined()) return ::testing::AssertionFailure() << "fn returned an undefined tensor";
  if (out.dtype() != kFloat64) {
    return ::testing::AssertionFailure() << "fn returned dtype " << out.dtype() << "; gradcheck needs float64";
  }
  if (!out.requires_grad()) {
    return ::testing::AssertionFailure() << "the output (shape " << out.shape_string()
                                         << ") does not require grad: the op recorded no autograd history";
  }
  Generator weight_generator(20240607);
  Tensor weight = randn(out.sizes(), {kFloat64, out.device()}, &weight_generator);
  sum(out * weight).backward();

  std::vector<Tensor> analytic(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = inputs[i];
    if (!t.defined() || !t.requires_grad()) continue;
    const Tensor& g = t.grad();
    if (!g.defined()) {  // no gradient reached this input: it must be zero
      analytic[i] = zeros(t.sizes(), {kFloat64, t.device()});
      continue;
    }
    if (g.sizes() != t.sizes() || g.dtype() != kFloat64) {
      return ::testing::AssertionFailure() << "input " << i << " of shape " << t.shape_string()
                                           << " got a gradient of shape " << g.shape_string() << " and dtype "
                                           << g.dtype();
    }
    analytic[i] = g.detach().to(kCPU).contiguous();
    Tensor(t).set_grad(Tensor());
  }

  // ---- numerical gradients by central differences, compared element by element ----
  auto failure = ::testing::AssertionFailure();
  failure << std::setprecision(10);
  int64_t mismatches = 0, checked = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = inputs[i];
    if (!t.defined() || !t.requires_grad()) continue;
    const double* analytic_values = analytic[i].data_ptr<double>();
    for (int64_t k = 0; k < t.numel(); ++k) {
      Tensor element = element_view(t, k);
      double original, plus, minus;
      {
        NoGradGuard no_grad;
        original = element.item_double();
        element.fill_(original + options.eps);
        plus = gradcheck_detail::weighted_loss(fn, inputs, weight);
        element.fill_(original - options.eps);
        minus = gradcheck_detail::weighted_loss(fn, inputs, weight);
        element.fill_(original);
      }
      const double numeric = (plus - minus) / (2 * options.eps);
      const double computed = analytic_values[k];
      ++checked;
      const bool ok = std::fabs(computed - numeric) <= options.atol + options.rtol * std::fabs(numeric);
      if (ok) continue;
      if (mismatches < options.max_reported) {
        failure << (mismatches ? "\n" : "") << "input " << i << " (shape " << t.shape_string() << "), element " << k
                << " " << tensor_compare_detail::index_string(k, t.sizes()) << ": analytic " << computed
                << ", numeric " << numeric << ", difference " << computed - numeric;
      }
      ++mismatches;
    }
  }
  if (mismatches == 0) return ::testing::AssertionSuccess();
  failure << "\n" << mismatches << " of " << checked << " gradient elements differ beyond atol " << options.atol
          << " + rtol " << options.rtol << " * |numeric| (eps " << options.eps << ")";
  return failure;
}
