// Joining and indexing: cat, stack, index_select, gather, index_add, scatter_add, one_hot.
#include "core/autograd/derivatives.h"
#include "core/kernels.h"
#include "core/ops/op_utils.h"

namespace accel {

void detail::check_index_range(const Tensor& index, int64_t size, const char* op, const char* what) {
  if (index.numel() == 0) return;
  Tensor bad;
  {
    NoGradGuard no_grad;
    bad = logical_or(index < scalar_tensor(0, index.dtype(), index.device()),
                     index >= scalar_tensor(size, index.dtype(), index.device()));
  }
  if (!amax(bad.to(kInt32)).item<int32_t>()) return;
  std::vector<int64_t> values = index.to_vector<int64_t>();
  for (int64_t v : values) {
    ACCEL_CHECK(v >= 0 && v < size, op, ": ", what, " ", v, " is out of range: expected values in [0, ", size,
                ") (index tensor of shape ", index.shape_string(), ")");
  }
}

Tensor cat(const std::vector<Tensor>& tensors, int64_t dim) {
  ACCEL_CHECK(!tensors.empty(), "cat: expected a non-empty list of tensors");
  const Tensor& first = tensors[0];
  int64_t d = wrap_dim(dim, first.dim(), "cat");
  Shape out_shape = first.sizes();
  out_shape[d] = 0;
  DType dtype = first.dtype();
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    detail::check_defined(t, "cat", "a list element");
    ACCEL_CHECK(t.dim() == first.dim(), "cat: tensor ", i, " has ", t.dim(), " dims (shape ", t.shape_string(),
                ") but tensor 0 has ", first.dim(), " (shape ", first.shape_string(), ")");
    ACCEL_CHECK(t.device() == first.device(), "cat: tensor ", i, " is on ", t.device().str(), " but tensor 0 is on ",
                first.device().str());
    for (int64_t k = 0; k < t.dim(); ++k) {
      ACCEL_CHECK(k == d || t.size(k) == first.size(k), "cat: sizes must match except in dim ", d, ", but tensor ",
                  i, " has shape ", t.shape_string(), " and tensor 0 has shape ", first.shape_string());
    }
    out_shape[d] += t.size(d);
    dtype = promote_types(dtype, t.dtype());
  }
  Tensor out = Tensor::empty(out_shape, dtype, first.device());
  {
    NoGradGuard no_grad;
    int64_t offset = 0;
    for (const Tensor& t : tensors) {
      kernels::copy(out.device(), t, out.narrow(d, offset, t.size(d)));
      offset += t.size(d);
    }
  }
  autograd::record::cat(out, tensors, d);
  return out;
}

Tensor stack(const std::vector<Tensor>& tensors, int64_t dim) {
  ACCEL_CHECK(!tensors.empty(), "stack: expected a non-empty list of tensors");
  int64_t d = wrap_dim(dim, tensors[0].dim() + 1, "stack");
  std::vector<Tensor> expanded;
  for (size_t i = 0; i < tensors.size(); ++i) {
    ACCEL_CHECK(tensors[i].sizes() == tensors[0].sizes(), "stack: expects each tensor to be equal size, but got ",
                tensors[0].shape_string(), " at entry 0 and ", tensors[i].shape_string(), " at entry ", i);
    expanded.push_back(tensors[i].unsqueeze(d));
  }
  return cat(expanded, d);
}

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  detail::check_index_dtype(index, "index_select");
  ACCEL_CHECK(index.dim() <= 1, "index_select: expected a 1-D index but got shape ", index.shape_string());
  int64_t d = wrap_dim(dim, x.dim(), "index_select");
  detail::common_device("index_select", {&x, &index});
  detail::check_index_range(index, x.dim() == 0 ? 1 : x.size(d), "index_select", "index");
  Tensor src, idx;
  {
    NoGradGuard no_grad;
    src = x.dim() == 0 ? x.reshape({1}) : x.contiguous();
    idx = index.reshape({-1}).contiguous();
  }
  Shape out_shape = src.sizes();
  out_shape[d] = idx.numel();
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  kernels::index_select(x.device(), src, d, idx, out);
  autograd::record::index_select(out, x, d, idx);
  return out;
}

namespace {
void check_gather_shapes(const Tensor& x, int64_t d, const Tensor& index, const char* op) {
  ACCEL_CHECK(index.dim() == x.dim(), op, ": index (shape ", index.shape_string(), ") must have as many dims as the "
              "input (shape ", x.shape_string(), ")");
  for (int64_t k = 0; k < x.dim(); ++k) {
    ACCEL_CHECK(k == d || index.size(k) <= x.size(k), op, ": index of shape ", index.shape_string(),
                " is larger than the input of shape ", x.shape_string(), " in dim ", k);
  }
  detail::check_index_range(index, x.size(d), op, "index");
}
}  // namespace

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  detail::check_index_dtype(index, "gather");
  int64_t d = wrap_dim(dim, x.dim(), "gather");
  detail::common_device("gather", {&x, &index});
  check_gather_shapes(x, d, index, "gather");
  Tensor idx;
  {
    NoGradGuard no_grad;
    idx = index.contiguous();
  }
  Tensor out = Tensor::empty(index.sizes(), x.dtype(), x.device());
  kernels::gather(x.device(), x, d, idx, out);
  autograd::record::gather(out, x, d, idx);
  return out;
}

Tensor index_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& source) {
  detail::check_index_dtype(index, "index_add");
  ACCEL_CHECK(index.dim() <= 1, "index_add: expected a 1-D index but got shape ", index.shape_string());
  int64_t d = wrap_dim(dim, x.dim(), "index_add");
  detail::common_device("index_add", {&x, &index, &source});
  Shape expected = x.sizes();
  expected[d] = index.numel();
  ACCEL_CHECK(source.sizes() == expected, "index_add: expected source of shape ", shape_str(expected),
              " but got ", source.shape_string());
  ACCEL_CHECK(source.dtype() == x.dtype(), "index_add: source dtype ", dtype_name(source.dtype()),
              " differs from input dtype ", dtype_name(x.dtype()));
  detail::check_index_range(index, x.size(d), "index_add", "index");
  Tensor out, idx, src;
  {
    NoGradGuard no_grad;
    out = x.clone();
    idx = index.reshape({-1}).contiguous();
    src = source.contiguous();
  }
  kernels::index_add(x.device(), out, d, idx, src);
  autograd::record::index_add(out, x, d, idx, source);
  return out;
}

Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& source) {
  detail::check_index_dtype(index, "scatter_add");
  int64_t d = wrap_dim(dim, x.dim(), "scatter_add");
  detail::common_device("scatter_add", {&x, &index, &source});
  check_gather_shapes(x, d, index, "scatter_add");
  ACCEL_CHECK(source.dim() == index.dim(), "scatter_add: source (shape ", source.shape_string(),
              ") must have as many dims as index (shape ", index.shape_string(), ")");
  for (int64_t k = 0; k < index.dim(); ++k) {
    ACCEL_CHECK(index.size(k) <= source.size(k), "scatter_add: index of shape ", index.shape_string(),
                " is larger than source of shape ", source.shape_string(), " in dim ", k);
  }
  ACCEL_CHECK(source.dtype() == x.dtype(), "scatter_add: source dtype ", dtype_name(source.dtype()),
              " differs from input dtype ", dtype_name(x.dtype()));
  Tensor out, idx;
  {
    NoGradGuard no_grad;
    out = x.clone();
    idx = index.contiguous();
  }
  kernels::scatter_add(x.device(), out, d, idx, source);
  autograd::record::scatter_add(out, x, d, idx, source);
  return out;
}

Tensor one_hot(const Tensor& indices, int64_t num_classes) {
  detail::check_index_dtype(indices, "one_hot");
  if (num_classes < 0) {
    ACCEL_CHECK(indices.numel() > 0, "one_hot: cannot infer num_classes from an empty tensor");
    num_classes = amax(indices).item<int64_t>() + 1;
  }
  detail::check_index_range(indices, num_classes, "one_hot", "class index");
  NoGradGuard no_grad;
  Tensor classes = arange(num_classes).to(indices.device());
  return (indices.to(kInt64).unsqueeze(-1) == classes).to(kInt64);
}

}  // namespace accel
