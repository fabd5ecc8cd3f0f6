// Reductions over any set of dims (an empty list means all dims), with keepdim.
#include <algorithm>
#include <cmath>

#include "core/autocast.h"
#include "core/autograd/derivatives.h"
#include "core/kernels.h"
#include "core/ops/op_utils.h"

namespace accel {

namespace {

// Sorted, unique, wrapped dims; empty input means every dim.
Shape normalize_dims(const Tensor& x, const Shape& dims, const char* op) {
  Shape out;
  if (dims.empty()) {
    for (int64_t d = 0; d < x.dim(); ++d) out.push_back(d);
    return out;
  }
  for (int64_t d : dims) out.push_back(wrap_dim(d, x.dim(), op));
  std::sort(out.begin(), out.end());
  ACCEL_CHECK(std::adjacent_find(out.begin(), out.end()) == out.end(), op, ": dim appears more than once in ",
              shape_str(dims));
  return out;
}

Shape keepdim_shape(const Tensor& x, const Shape& dims) {
  Shape shape = x.sizes();
  for (int64_t d : dims) shape[d] = 1;
  return shape;
}

Shape reduced_shape(const Tensor& x, const Shape& dims, bool keepdim) {
  if (keepdim) return keepdim_shape(x, dims);
  Shape shape;
  for (int64_t d = 0, k = 0; d < x.dim(); ++d) {
    if (k < static_cast<int64_t>(dims.size()) && dims[k] == d) {
      ++k;
      continue;
    }
    shape.push_back(x.size(d));
  }
  return shape;
}

// Runs the reduce kernel into a keepdim-shaped output and views it as the requested shape.
Tensor run_reduce(ReduceOp op, const Tensor& x, const Shape& dims, bool keepdim, DType out_dtype,
                  const Tensor& indices = Tensor(), int64_t correction = 0) {
  Tensor out = Tensor::empty(keepdim_shape(x, dims), out_dtype, x.device());
  kernels::reduce(x.device(), op, x, dims, out, indices, correction);
  NoGradGuard no_grad;
  return keepdim ? out : out.view(reduced_shape(x, dims, keepdim));
}

void check_nonempty(const Tensor& x, const Shape& dims, const char* op) {
  for (int64_t d : dims) {
    ACCEL_CHECK(x.size(d) > 0, op, ": cannot reduce over the empty dim ", d, " of shape ", x.shape_string());
  }
  if (dims.empty()) ACCEL_CHECK(x.numel() > 0, op, ": cannot reduce an empty tensor");
}

}  // namespace

Tensor sum(const Tensor& x_in, const Shape& dims, bool keepdim) {
  const Tensor x = autocast::to_full_precision(x_in);  // reductions run in fp32 under autocast
  Shape d = normalize_dims(x, dims, "sum");
  Tensor in = x.is_floating_point() || x.dtype() == kInt64 ? x : x.to(kInt64);  // ints sum in int64, as torch
  Tensor out = run_reduce(ReduceOp::Sum, in, d, keepdim, in.dtype());
  autograd::record::sum(out, x, d, keepdim);
  return out;
}

Tensor mean(const Tensor& x_in, const Shape& dims, bool keepdim) {
  const Tensor x = autocast::to_full_precision(x_in);
  detail::check_floating(x, "mean");
  Shape d = normalize_dims(x, dims, "mean");
  Tensor out = run_reduce(ReduceOp::Mean, x, d, keepdim, x.dtype());
  autograd::record::mean(out, x, d, keepdim);
  return out;
}

namespace {
ValuesIndices extreme_dim(const Tensor& x, int64_t dim, bool keepdim, bool is_max) {
  const char* name = is_max ? "max" : "min";
  int64_t d = wrap_dim(dim, x.dim(), name);
  Shape dims = x.dim() == 0 ? Shape{} : Shape{d};
  check_nonempty(x, dims, name);
  Tensor indices = Tensor::empty(keepdim_shape(x, dims), kInt64, x.device());
  Tensor values = run_reduce(is_max ? ReduceOp::Max : ReduceOp::Min, x, dims, keepdim, x.dtype(), indices);
  if (!keepdim) {
    NoGradGuard no_grad;
    indices = indices.view(reduced_shape(x, dims, false));
  }
  autograd::record::extreme_at(values, x, d, keepdim, indices);
  return {values, indices};
}

Tensor extreme_all(const Tensor& x, const Shape& dims, bool keepdim, bool is_max) {
  const char* name = is_max ? "amax" : "amin";
  Shape d = normalize_dims(x, dims, name);
  check_nonempty(x, d, name);
  Tensor out = run_reduce(is_max ? ReduceOp::Max : ReduceOp::Min, x, d, keepdim, x.dtype());
  autograd::record::extreme(out, x, d, keepdim);
  return out;
}

Tensor arg_extreme(const Tensor& x, std::optional<int64_t> dim, bool keepdim, bool is_max) {
  const char* name = is_max ? "argmax" : "argmin";
  ReduceOp op = is_max ? ReduceOp::ArgMax : ReduceOp::ArgMin;
  if (!dim) {
    check_nonempty(x, {}, name);
    Tensor flat = x.reshape({-1});
    return run_reduce(op, flat, {0}, false, kInt64);
  }
  int64_t d = wrap_dim(*dim, x.dim(), name);
  Shape dims = x.dim() == 0 ? Shape{} : Shape{d};
  check_nonempty(x, dims, name);
  return run_reduce(op, x, dims, keepdim, kInt64);
}
}  // namespace

ValuesIndices max(const Tensor& x, int64_t dim, bool keepdim) { return extreme_dim(x, dim, keepdim, true); }
ValuesIndices min(const Tensor& x, int64_t dim, bool keepdim) { return extreme_dim(x, dim, keepdim, false); }
Tensor max(const Tensor& x) { return extreme_all(x, {}, false, true); }
Tensor min(const Tensor& x) { return extreme_all(x, {}, false, false); }
Tensor amax(const Tensor& x, const Shape& dims, bool keepdim) { return extreme_all(x, dims, keepdim, true); }
Tensor amin(const Tensor& x, const Shape& dims, bool keepdim) { return extreme_all(x, dims, keepdim, false); }
Tensor argmax(const Tensor& x, std::optional<int64_t> dim, bool keepdim) { return arg_extreme(x, dim, keepdim, true); }
Tensor argmin(const Tensor& x, std::optional<int64_t> dim, bool keepdim) { return arg_extreme(x, dim, keepdim, false); }

Tensor var(const Tensor& x, const Shape& dims, int64_t correction, bool keepdim) {
  detail::check_floating(x, "var");
  Shape d = normalize_dims(x, dims, "var");
  ACCEL_CHECK(correction >= 0, "var: correction must be non-negative, got ", correction);
  Tensor out = run_reduce(ReduceOp::Var, x, d, keepdim, x.dtype(), Tensor(), correction);
  autograd::record::var(out, x, d, correction, keepdim);
  return out;
}

Tensor std(const Tensor& x, const Shape& dims, int64_t correction, bool keepdim) {
  return sqrt(var(x, dims, correction, keepdim));
}

Tensor sum_to(const Tensor& x, const Shape& shape) {
  if (x.sizes() == shape) return x;
  ACCEL_CHECK(static_cast<int64_t>(shape.size()) <= x.dim(), "sum_to: cannot sum shape ", x.shape_string(),
              " to the larger rank shape ", shape_str(shape));
  int64_t lead = x.dim() - static_cast<int64_t>(shape.size());
  Shape dims;
  for (int64_t d = 0; d < x.dim(); ++d) {
    if (d < lead) {
      dims.push_back(d);
    } else if (shape[d - lead] == 1 && x.size(d) != 1) {
      dims.push_back(d);
    } else {
      ACCEL_CHECK(shape[d - lead] == x.size(d) || shape[d - lead] == 1, "sum_to: shape ", x.shape_string(),
                  " does not reduce to ", shape_str(shape));
    }
  }
  Tensor out = dims.empty() ? x : sum(x, dims, true);
  return out.reshape(shape);
}

Tensor sum_of_squares(const std::vector<Tensor>& tensors) {
  ACCEL_CHECK(!tensors.empty(), "sum_of_squares: expected at least one tensor");
  const Device device = tensors.front().device();
  const DType dtype = tensors.front().dtype();
  std::vector<Tensor> contiguous;
  contiguous.reserve(tensors.size());
  for (const Tensor& t : tensors) {
    detail::check_defined(t, "sum_of_squares", "tensor");
    ACCEL_CHECK(t.device() == device && t.dtype() == dtype && t.is_floating_point(), "sum_of_squares: expected "
                "floating tensors of one dtype on one device, got ", dtype_name(dtype), " on ", device.str(), " and ",
                dtype_name(t.dtype()), " on ", t.device().str());
    contiguous.push_back(t.contiguous());
  }
  NoGradGuard no_grad;
  if (!kernels::sum_of_squares.has(device.type)) {  // a backend without the kernel: per tensor, in double
    Tensor total = zeros({}, {kFloat64, device});
    for (const Tensor& t : contiguous) {
      Tensor wide = t.to(kFloat64);
      total.add_(sum(wide * wide));
    }
    return total;
  }
  Tensor out = Tensor::empty({}, kFloat64, device);
  kernels::sum_of_squares(device, contiguous, out);
  return out;
}

}  // namespace accel
