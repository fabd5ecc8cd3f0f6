// Tensor basics: construction, metadata, data access and the autograd accessors.
// Views live in core/ops/views.cc, math in core/ops/*.cc, printing in core/print.cc.
#include "core/tensor.h"

#include "core/autograd/grad_mode.h"
#include "core/autograd/node.h"
#include "core/ops.h"

namespace accel {

TensorImpl::TensorImpl(Storage storage, Shape sizes, Shape strides, int64_t offset, DType dtype)
    : storage(std::move(storage)), sizes(std::move(sizes)), strides(std::move(strides)),
      offset(offset), dtype(dtype) {}

TensorImpl::~TensorImpl() = default;

autograd::AutogradMeta& TensorImpl::autograd_meta() {
  if (!autograd) autograd = std::make_unique<autograd::AutogradMeta>();
  return *autograd;
}

Tensor Tensor::empty(const Shape& sizes, DType dtype, Device device) {
  for (int64_t s : sizes) {
    ACCEL_CHECK(s >= 0, "empty: negative dimension in shape ", shape_str(sizes));
  }
  size_t nbytes = static_cast<size_t>(shape_numel(sizes)) * itemsize(dtype);
  auto storage = std::make_shared<StorageImpl>(nbytes, device);
  return view_of(std::move(storage), sizes, contiguous_strides(sizes), 0, dtype);
}

Tensor Tensor::view_of(Storage storage, Shape sizes, Shape strides, int64_t offset, DType dtype) {
  return Tensor(std::make_shared<TensorImpl>(std::move(storage), std::move(sizes), std::move(strides),
                                             offset, dtype));
}

TensorImpl* Tensor::impl() const {
  ACCEL_CHECK(impl_ != nullptr, "use of an undefined tensor (default-constructed, never assigned)");
  return impl_.get();
}

int64_t Tensor::size(int64_t dim) const {
  ACCEL_CHECK(this->dim() > 0, "size: a 0-dim tensor has no dim ", dim);
  return sizes()[wrap_dim(dim, this->dim(), "size")];
}
int64_t Tensor::stride(int64_t dim) const {
  ACCEL_CHECK(this->dim() > 0, "stride: a 0-dim tensor has no dim ", dim);
  return strides()[wrap_dim(dim, this->dim(), "stride")];
}

bool Tensor::is_contiguous() const {
  if (numel() == 0) return true;  // as PyTorch: no element is out of place
  int64_t expected = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (sizes()[i] == 1) continue;
    if (strides()[i] != expected) return false;
    expected *= sizes()[i];
  }
  return true;
}

void* Tensor::data_ptr() const {
  char* base = static_cast<char*>(storage()->data());
  if (base == nullptr) {
    ACCEL_CHECK(!storage()->is_released(), "a tensor of shape ", shape_string(), " has released data: it is a "
                "parameter that ZeRO stage 3 holds sharded across processes. Its full value exists only during "
                "its module's forward and backward; gather it first (Accelerator::get_state_dict)");
    return nullptr;
  }
  return base + storage_offset() * element_size();
}

void Tensor::check_dtype(DType expected, const char* op) const {
  ACCEL_CHECK(dtype() == expected, op, ": expected a tensor of dtype ", dtype_name(expected),
              " but got ", dtype_name(dtype()), " (shape ", shape_string(), ")");
}

double Tensor::item_double() const {
  ACCEL_CHECK(numel() == 1, "item: expected a tensor with one element but got shape ", shape_string());
  Tensor one = to(kCPU).to(kFloat64).contiguous();
  return *static_cast<const double*>(one.data_ptr());
}

template <typename T>
T Tensor::item() const {
  ACCEL_CHECK(numel() == 1, "item: expected a tensor with one element but got shape ", shape_string());
  Tensor one = to(kCPU).to(dtype_of<T>).contiguous();
  return *static_cast<const T*>(one.data_ptr());
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  Tensor flat = to(kCPU).to(dtype_of<T>).contiguous();
  const T* data = static_cast<const T*>(flat.data_ptr());
  return std::vector<T>(data, data + flat.numel());
}

#define ACCEL_INSTANTIATE_ACCESSORS(T)      \
  template T Tensor::item<T>() const;       \
  template std::vector<T> Tensor::to_vector<T>() const;
ACCEL_INSTANTIATE_ACCESSORS(float)
ACCEL_INSTANTIATE_ACCESSORS(double)
ACCEL_INSTANTIATE_ACCESSORS(Half)
ACCEL_INSTANTIATE_ACCESSORS(BFloat16)
ACCEL_INSTANTIATE_ACCESSORS(int64_t)
ACCEL_INSTANTIATE_ACCESSORS(int32_t)
ACCEL_INSTANTIATE_ACCESSORS(bool)
#undef ACCEL_INSTANTIATE_ACCESSORS

// ---- autograd accessors ----

bool Tensor::requires_grad() const {
  const auto& meta = impl()->autograd;
  return meta != nullptr && (meta->requires_grad || meta->grad_fn != nullptr);
}

Tensor& Tensor::requires_grad_(bool requires_grad) {
  ACCEL_CHECK(is_leaf(), "requires_grad_: can only change requires_grad of leaf tensors; this one was "
              "computed by ", grad_fn()->name(), " (use detach() to make a new leaf)");
  ACCEL_CHECK(!requires_grad || is_floating_point(), "requires_grad_: only floating-point tensors can "
              "require gradients, but this tensor has dtype ", dtype_name(dtype()));
  impl()->autograd_meta().requires_grad = requires_grad;
  return *this;
}

const Tensor& Tensor::grad() const {
  static const Tensor undefined;
  const auto& meta = impl()->autograd;
  return meta ? meta->grad : undefined;
}

Tensor& Tensor::mutable_grad() { return impl()->autograd_meta().grad; }

void Tensor::set_grad(Tensor grad) {
  if (grad.defined()) {
    ACCEL_CHECK(grad.sizes() == sizes(), "set_grad: gradient shape ", grad.shape_string(),
                " does not match tensor shape ", shape_string());
  }
  impl()->autograd_meta().grad = std::move(grad);
}

bool Tensor::is_leaf() const {
  const auto& meta = impl()->autograd;
  return meta == nullptr || meta->grad_fn == nullptr;
}

std::shared_ptr<autograd::Node> Tensor::grad_fn() const {
  const auto& meta = impl()->autograd;
  return meta ? meta->grad_fn : nullptr;
}

void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
  autograd::run_backward(*this, gradient, retain_graph);
}

void Tensor::register_hook(std::function<Tensor(const Tensor&)> hook) const {
  ACCEL_CHECK(requires_grad(), "register_hook: cannot register a hook on a tensor that does not "
              "require grad");
  if (is_leaf()) {
    impl()->autograd_meta().hooks.push_back(std::move(hook));
  } else {
    grad_fn()->pre_hooks.push_back(std::move(hook));
  }
}

void Tensor::register_post_accumulate_grad_hook(std::function<void(const Tensor&)> hook) const {
  ACCEL_CHECK(is_leaf() && requires_grad(), "register_post_accumulate_grad_hook: only leaf tensors "
              "that require grad accumulate gradients");
  impl()->autograd_meta().post_accumulate_hooks.push_back(std::move(hook));
}

void Tensor::retain_grad() const {
  if (is_leaf()) return;  // leaves keep their gradient anyway
  std::weak_ptr<TensorImpl> weak = impl_;
  grad_fn()->pre_hooks.push_back([weak](const Tensor& grad) {
    if (auto impl = weak.lock()) {
      NoGradGuard no_grad;
      Tensor& slot = impl->autograd_meta().grad;
      slot = slot.defined() ? slot + grad : grad.clone();
    }
    return Tensor();
  });
}

Tensor Tensor::detach() const {
  return view_of(storage(), sizes(), strides(), storage_offset(), dtype());
}

void Tensor::set_data(const Tensor& other) {
  ACCEL_CHECK(is_leaf(), "set_data: only leaf tensors can be given new data");
  TensorImpl* self = impl();
  self->storage = other.storage();
  self->sizes = other.sizes();
  self->strides = other.strides();
  self->offset = other.storage_offset();
  self->dtype = other.dtype();
  if (self->autograd) {
    self->autograd->grad = Tensor();
    ACCEL_CHECK(!self->autograd->requires_grad || is_floating(self->dtype), "set_data: a tensor that requires grad "
                "cannot take data of dtype ", dtype_name(self->dtype));
  }
}

Tensor& Tensor::detach_() {
  if (impl()->autograd) {
    impl()->autograd->grad_fn = nullptr;
    impl()->autograd->requires_grad = false;
  }
  return *this;
}

}  // namespace accel
