/// @file
/// Tensor: a thin value type over a refcounted TensorImpl (storage + sizes/strides/offset +
/// dtype + optional autograd state). Copies of a Tensor share one impl, as in LibTorch; views
/// get their own impl over the same Storage. Method names follow LibTorch's C++ frontend.
/// The math lives in core/ops.h as free functions; methods here forward to them.
#pragma once

#include <functional>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/scalar.h"
#include "core/shape.h"
#include "core/storage.h"

namespace accel {

namespace autograd {
struct AutogradMeta;
class Node;
}  // namespace autograd

class Tensor;

struct TensorImpl {
  Storage storage;
  Shape sizes;
  Shape strides;       ///< in elements
  int64_t offset = 0;  ///< in elements, from storage->data()
  DType dtype = kFloat32;
  std::unique_ptr<autograd::AutogradMeta> autograd;  ///< null until autograd state is needed

  TensorImpl(Storage storage, Shape sizes, Shape strides, int64_t offset, DType dtype);
  ~TensorImpl();
  autograd::AutogradMeta& autograd_meta();  ///< creates it on first use
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  /// A new contiguous tensor with uninitialized memory.
  static Tensor empty(const Shape& sizes, DType dtype = kFloat32, Device device = kCPU);
  /// A tensor over existing storage (the basis of every view).
  static Tensor view_of(Storage storage, Shape sizes, Shape strides, int64_t offset, DType dtype);

  /// @name metadata
  /// @{
  bool defined() const { return impl_ != nullptr; }
  const Shape& sizes() const { return impl()->sizes; }
  const Shape& shape() const { return impl()->sizes; }
  const Shape& strides() const { return impl()->strides; }
  int64_t size(int64_t dim) const;
  int64_t stride(int64_t dim) const;
  int64_t dim() const { return static_cast<int64_t>(impl()->sizes.size()); }
  int64_t numel() const { return shape_numel(impl()->sizes); }
  DType dtype() const { return impl()->dtype; }
  DType scalar_type() const { return dtype(); }
  Device device() const { return impl()->storage->device(); }
  bool is_cpu() const { return device().is_cpu(); }
  bool is_cuda() const { return device().is_cuda(); }
  int64_t storage_offset() const { return impl()->offset; }
  int64_t element_size() const { return itemsize(dtype()); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * element_size(); }
  bool is_contiguous() const;
  bool is_floating_point() const { return is_floating(dtype()); }
  const Storage& storage() const { return impl()->storage; }
  TensorImpl* impl() const;
  bool is_same(const Tensor& other) const { return impl_ == other.impl_; }
  /// Number of Tensor handles sharing this impl (used to steal buffers safely).
  long use_count() const { return impl_.use_count(); }
  /// The in-place write counter of the underlying storage.
  uint64_t version() const { return storage()->version(); }
  std::string str() const;  ///< LibTorch-style printing
  std::string shape_string() const { return shape_str(sizes()); }
  /// @}

  /// @name data access (CPU)
  /// @{
  void* data_ptr() const;
  template <typename T>
  T* data_ptr() const {
    check_dtype(dtype_of<T>, "data_ptr");
    return static_cast<T*>(data_ptr());
  }
  /// The value of a one-element tensor, converted to T.
  template <typename T>
  T item() const;
  double item_double() const;
  template <typename T>
  std::vector<T> to_vector() const;  ///< elements in row-major order, converted to T
  /// @}

  /// @name autograd
  /// @{
  bool requires_grad() const;
  Tensor& requires_grad_(bool requires_grad = true);
  const Tensor& grad() const;
  Tensor& mutable_grad();
  void set_grad(Tensor grad);
  bool is_leaf() const;
  std::shared_ptr<autograd::Node> grad_fn() const;
  void backward(const Tensor& gradient = Tensor(), bool retain_graph = false) const;
  /// hook(grad) runs when this tensor's gradient is computed; returning a defined tensor
  /// replaces the gradient.
  void register_hook(std::function<Tensor(const Tensor&)> hook) const;
  /// On leaves: hook(leaf) runs after the gradient has been accumulated into leaf.grad()
  /// (the point where DDP launches its bucket all-reduce).
  void register_post_accumulate_grad_hook(std::function<void(const Tensor&)> hook) const;
  /// Keeps the gradient of a non-leaf tensor in grad() after backward.
  void retain_grad() const;
  /// Same storage, no autograd history.
  Tensor detach() const;
  /// Makes this tensor use other's storage, layout and dtype while keeping its identity and
  /// autograd flags (how Module::to moves parameters that layers hold handles to). Any
  /// gradient is dropped.
  void set_data(const Tensor& other);
  Tensor& detach_();
  /// @}

  /// @name views (share storage; see core/ops/views.cc)
  /// @{
  Tensor view(const Shape& shape) const;
  Tensor reshape(const Shape& shape) const;
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  Tensor transpose(int64_t dim0, int64_t dim1) const;
  Tensor t() const;
  Tensor permute(const Shape& dims) const;
  Tensor slice(int64_t dim, std::optional<int64_t> start = std::nullopt,
               std::optional<int64_t> end = std::nullopt, int64_t step = 1) const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor select(int64_t dim, int64_t index) const;
  Tensor operator[](int64_t index) const { return select(0, index); }
  Tensor expand(const Shape& sizes) const;
  Tensor expand_as(const Tensor& other) const { return expand(other.sizes()); }
  Tensor unsqueeze(int64_t dim) const;
  Tensor squeeze() const;
  Tensor squeeze(int64_t dim) const;
  Tensor contiguous() const;
  /// @}

  /// @name copies and conversion
  /// @{
  Tensor clone() const;
  Tensor to(DType dtype) const;
  Tensor to(Device device) const;
  Tensor to(Device device, DType dtype) const;
  Tensor cpu() const { return to(kCPU); }
  /// @}

  /// @name math (forwarding to core/ops.h)
  /// @{
  Tensor add(const Tensor& other, Scalar alpha = 1) const;
  Tensor sub(const Tensor& other, Scalar alpha = 1) const;
  Tensor mul(const Tensor& other) const;
  Tensor div(const Tensor& other) const;
  Tensor pow(const Tensor& exponent) const;
  Tensor pow(Scalar exponent) const;
  Tensor neg() const;
  Tensor abs() const;
  Tensor exp() const;
  Tensor log() const;
  Tensor sqrt() const;
  Tensor rsqrt() const;
  Tensor tanh() const;
  Tensor sigmoid() const;
  Tensor relu() const;
  Tensor erf() const;
  Tensor clamp(std::optional<Scalar> min, std::optional<Scalar> max = std::nullopt) const;
  Tensor masked_fill(const Tensor& mask, Scalar value) const;
  Tensor sum() const;
  Tensor sum(const Shape& dims, bool keepdim = false) const;
  Tensor mean() const;
  Tensor mean(const Shape& dims, bool keepdim = false) const;
  Tensor max() const;
  Tensor min() const;
  Tensor argmax(std::optional<int64_t> dim = std::nullopt, bool keepdim = false) const;
  Tensor var(const Shape& dims, int64_t correction = 1, bool keepdim = false) const;
  Tensor std(const Shape& dims, int64_t correction = 1, bool keepdim = false) const;
  Tensor matmul(const Tensor& other) const;
  Tensor softmax(int64_t dim) const;
  Tensor log_softmax(int64_t dim) const;
  Tensor index_select(int64_t dim, const Tensor& index) const;
  Tensor gather(int64_t dim, const Tensor& index) const;
  /// @}

  /// @name in place (bump the version counter; refused on tensors that need grad)
  /// @{
  Tensor& add_(const Tensor& other, Scalar alpha = 1);
  Tensor& sub_(const Tensor& other, Scalar alpha = 1);
  Tensor& mul_(const Tensor& other);
  Tensor& mul_(Scalar other);
  Tensor& div_(const Tensor& other);
  Tensor& div_(Scalar other);
  Tensor& add_(Scalar other);
  Tensor& clamp_(std::optional<Scalar> min, std::optional<Scalar> max = std::nullopt);
  Tensor& masked_fill_(const Tensor& mask, Scalar value);
  Tensor& copy_(const Tensor& src);
  Tensor& fill_(Scalar value);
  Tensor& zero_();

  void check_dtype(DType expected, const char* op) const;
  /// @}

 private:
  std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& out, const Tensor& tensor);

/// Operators with LibTorch semantics (elementwise, broadcasting; comparisons give bool).
Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator+(const Tensor& a, Scalar b);
Tensor operator-(const Tensor& a, Scalar b);
Tensor operator*(const Tensor& a, Scalar b);
Tensor operator/(const Tensor& a, Scalar b);
Tensor operator+(Scalar a, const Tensor& b);
Tensor operator-(Scalar a, const Tensor& b);
Tensor operator*(Scalar a, const Tensor& b);
Tensor operator/(Scalar a, const Tensor& b);
Tensor operator-(const Tensor& a);
Tensor operator==(const Tensor& a, const Tensor& b);
Tensor operator!=(const Tensor& a, const Tensor& b);
Tensor operator<(const Tensor& a, const Tensor& b);
Tensor operator<=(const Tensor& a, const Tensor& b);
Tensor operator>(const Tensor& a, const Tensor& b);
Tensor operator>=(const Tensor& a, const Tensor& b);
Tensor operator==(const Tensor& a, Scalar b);
Tensor operator!=(const Tensor& a, Scalar b);
Tensor operator<(const Tensor& a, Scalar b);
Tensor operator<=(const Tensor& a, Scalar b);
Tensor operator>(const Tensor& a, Scalar b);
Tensor operator>=(const Tensor& a, Scalar b);
Tensor& operator+=(Tensor& a, const Tensor& b);
Tensor& operator-=(Tensor& a, const Tensor& b);
Tensor& operator*=(Tensor& a, const Tensor& b);
Tensor& operator/=(Tensor& a, const Tensor& b);

}  // namespace accel
