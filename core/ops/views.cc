// View ops: new sizes/strides/offset over the same storage, never a copy (reshape copies
// only when no view can express the result, as in PyTorch). Each records its backward.
#include <algorithm>
#include <numeric>

#include "core/autograd/derivatives.h"
#include "core/ops/op_utils.h"

namespace accel {

namespace {

// Resolves one -1 in a requested shape against numel.
Shape infer_shape(const Shape& requested, int64_t numel, const char* op) {
  Shape shape = requested;
  int64_t known = 1, infer_at = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      ACCEL_CHECK(infer_at < 0, op, ": only one dimension can be -1, got ", shape_str(requested));
      infer_at = static_cast<int64_t>(i);
    } else {
      ACCEL_CHECK(shape[i] >= 0, op, ": invalid size ", shape[i], " in shape ", shape_str(requested));
      known *= shape[i];
    }
  }
  if (infer_at >= 0) {
    ACCEL_CHECK(known != 0 && numel % known == 0, op, ": shape ", shape_str(requested),
                " is invalid for input of size ", numel);
    shape[infer_at] = numel / known;
  } else {
    ACCEL_CHECK(known == numel, op, ": shape ", shape_str(requested), " is invalid for input of size ", numel);
  }
  return shape;
}

// Strides for viewing `t` as `shape` without a copy, if possible (PyTorch's computeStride).
std::optional<Shape> view_strides(const Tensor& t, const Shape& shape) {
  const Shape& old_sizes = t.sizes();
  const Shape& old_strides = t.strides();
  Shape new_strides(shape.size());
  if (t.numel() == 0 || t.dim() == 0) return contiguous_strides(shape);
  int64_t view_d = static_cast<int64_t>(shape.size()) - 1;
  int64_t chunk_base_stride = old_strides.empty() ? 1 : old_strides.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t tensor_d = static_cast<int64_t>(old_sizes.size()) - 1; tensor_d >= 0; --tensor_d) {
    tensor_numel *= old_sizes[tensor_d];
    if (tensor_d == 0 || (old_sizes[tensor_d - 1] != 1 &&
                          old_strides[tensor_d - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
        new_strides[view_d] = view_numel * chunk_base_stride;
        view_numel *= shape[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return std::nullopt;
      if (tensor_d > 0) {
        chunk_base_stride = old_strides[tensor_d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) return std::nullopt;
  return new_strides;
}

Tensor make_view(const Tensor& x, Shape sizes, Shape strides, int64_t offset) {
  return Tensor::view_of(x.storage(), std::move(sizes), std::move(strides), offset, x.dtype());
}

}  // namespace

Tensor Tensor::view(const Shape& shape) const {
  Shape sizes = infer_shape(shape, numel(), "view");
  std::optional<Shape> strides = view_strides(*this, sizes);
  ACCEL_CHECK(strides.has_value(), "view: shape ", shape_str(sizes), " is not compatible with input of shape ",
              shape_string(), " and strides ", shape_str(this->strides()),
              " (at least one dimension spans two contiguous subspaces); use reshape() instead");
  Tensor out = make_view(*this, sizes, *strides, storage_offset());
  autograd::record::reshape(out, *this);
  return out;
}

Tensor Tensor::reshape(const Shape& shape) const {
  Shape sizes = infer_shape(shape, numel(), "reshape");
  if (view_strides(*this, sizes)) return view(sizes);
  return contiguous().view(sizes);
}

Tensor Tensor::flatten(int64_t start_dim, int64_t end_dim) const {
  if (dim() == 0) return reshape({1});
  int64_t s = wrap_dim(start_dim, dim(), "flatten"), e = wrap_dim(end_dim, dim(), "flatten");
  ACCEL_CHECK(s <= e, "flatten: start_dim ", start_dim, " comes after end_dim ", end_dim);
  Shape shape(sizes().begin(), sizes().begin() + s);
  int64_t merged = 1;
  for (int64_t d = s; d <= e; ++d) merged *= size(d);
  shape.push_back(merged);
  shape.insert(shape.end(), sizes().begin() + e + 1, sizes().end());
  return reshape(shape);
}

Tensor Tensor::permute(const Shape& dims) const {
  ACCEL_CHECK(static_cast<int64_t>(dims.size()) == dim(), "permute: expected ", dim(), " dims for a tensor "
              "of shape ", shape_string(), " but got ", shape_str(dims));
  Shape wrapped(dims.size()), sizes_out(dims.size()), strides_out(dims.size());
  std::vector<bool> seen(dims.size(), false);
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = wrap_dim(dims[i], dim(), "permute");
    ACCEL_CHECK(!seen[d], "permute: dim ", d, " appears twice in ", shape_str(dims));
    seen[d] = true;
    wrapped[i] = d;
    sizes_out[i] = size(d);
    strides_out[i] = stride(d);
  }
  Tensor out = make_view(*this, sizes_out, strides_out, storage_offset());
  autograd::record::permute(out, *this, wrapped);
  return out;
}

Tensor Tensor::transpose(int64_t dim0, int64_t dim1) const {
  if (dim() == 0) return *this;
  int64_t a = wrap_dim(dim0, dim(), "transpose"), b = wrap_dim(dim1, dim(), "transpose");
  Shape order(dim());
  std::iota(order.begin(), order.end(), 0);
  std::swap(order[a], order[b]);
  return permute(order);
}

Tensor Tensor::t() const {
  ACCEL_CHECK(dim() <= 2, "t: expected a tensor with at most 2 dims but got shape ", shape_string());
  return dim() < 2 ? *this : transpose(0, 1);
}

Tensor Tensor::slice(int64_t dim_, std::optional<int64_t> start, std::optional<int64_t> end, int64_t step) const {
  int64_t d = wrap_dim(dim_, dim(), "slice");
  ACCEL_CHECK(step > 0, "slice: step must be positive, got ", step);
  int64_t n = size(d);
  auto clamp_index = [n](int64_t i) { return std::clamp<int64_t>(i < 0 ? i + n : i, 0, n); };
  int64_t s = start ? clamp_index(*start) : 0;
  int64_t e = end ? clamp_index(*end) : n;
  if (e < s) e = s;
  Shape sizes_out = sizes(), strides_out = strides();
  sizes_out[d] = (e - s + step - 1) / step;
  strides_out[d] *= step;
  Tensor out = make_view(*this, sizes_out, strides_out, storage_offset() + s * stride(d));
  autograd::record::slice(out, *this, d, s, e, step);
  return out;
}

Tensor Tensor::narrow(int64_t dim_, int64_t start, int64_t length) const {
  int64_t d = wrap_dim(dim_, dim(), "narrow");
  int64_t n = size(d);
  if (start < 0) start += n;
  ACCEL_CHECK(start >= 0 && length >= 0 && start + length <= n, "narrow: [", start, ", ", start + length,
              ") is out of range for dim ", d, " of size ", n, " (shape ", shape_string(), ")");
  return slice(d, start, start + length);
}

Tensor Tensor::select(int64_t dim_, int64_t index) const {
  ACCEL_CHECK(dim() > 0, "select: cannot select from a 0-dim tensor");
  int64_t d = wrap_dim(dim_, dim(), "select");
  int64_t n = size(d);
  ACCEL_CHECK(index >= -n && index < n, "select: index ", index, " is out of range for dim ", d,
              " of size ", n, " (shape ", shape_string(), ")");
  if (index < 0) index += n;
  Shape sizes_out = sizes(), strides_out = strides();
  sizes_out.erase(sizes_out.begin() + d);
  strides_out.erase(strides_out.begin() + d);
  Tensor out = make_view(*this, sizes_out, strides_out, storage_offset() + index * stride(d));
  autograd::record::select(out, *this, d, index);
  return out;
}

Tensor Tensor::expand(const Shape& target) const {
  ACCEL_CHECK(static_cast<int64_t>(target.size()) >= dim(), "expand: cannot expand shape ", shape_string(),
              " to ", shape_str(target), " (fewer dims)");
  size_t lead = target.size() - dim();
  Shape sizes_out(target.size()), strides_out(target.size());
  for (size_t i = 0; i < target.size(); ++i) {
    if (i < lead) {
      ACCEL_CHECK(target[i] >= 0, "expand: size -1 is not allowed in a new leading dim (target ", shape_str(target), ")");
      sizes_out[i] = target[i];
      strides_out[i] = 0;
      continue;
    }
    int64_t own = sizes()[i - lead];
    int64_t want = target[i] == -1 ? own : target[i];
    ACCEL_CHECK(own == want || own == 1, "expand: the expanded size ", want, " must match the existing size ",
                own, " at non-singleton dim ", i, " (shape ", shape_string(), " to ", shape_str(target), ")");
    sizes_out[i] = want;
    strides_out[i] = own == want ? strides()[i - lead] : 0;
  }
  if (sizes_out == sizes()) return *this;
  Tensor out = make_view(*this, sizes_out, strides_out, storage_offset());
  autograd::record::expand(out, *this);
  return out;
}

Tensor Tensor::unsqueeze(int64_t dim_) const {
  int64_t d = wrap_dim(dim_, dim() + 1, "unsqueeze");
  Shape sizes_out = sizes(), strides_out = strides();
  int64_t new_stride = d < dim() ? size(d) * stride(d) : 1;
  sizes_out.insert(sizes_out.begin() + d, 1);
  strides_out.insert(strides_out.begin() + d, new_stride);
  Tensor out = make_view(*this, sizes_out, strides_out, storage_offset());
  autograd::record::reshape(out, *this);
  return out;
}

Tensor Tensor::squeeze() const {
  Shape sizes_out, strides_out;
  for (int64_t d = 0; d < dim(); ++d) {
    if (size(d) == 1) continue;
    sizes_out.push_back(size(d));
    strides_out.push_back(stride(d));
  }
  Tensor out = make_view(*this, sizes_out, strides_out, storage_offset());
  autograd::record::reshape(out, *this);
  return out;
}

Tensor Tensor::squeeze(int64_t dim_) const {
  if (dim() == 0) return *this;
  int64_t d = wrap_dim(dim_, dim(), "squeeze");
  if (size(d) != 1) return *this;
  Shape sizes_out = sizes(), strides_out = strides();
  sizes_out.erase(sizes_out.begin() + d);
  strides_out.erase(strides_out.begin() + d);
  Tensor out = make_view(*this, sizes_out, strides_out, storage_offset());
  autograd::record::reshape(out, *this);
  return out;
}

}  // namespace accel
