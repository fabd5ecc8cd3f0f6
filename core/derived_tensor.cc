// DerivedTensor: remembers what a kept tensor was computed from, and checks it on every get().
#include "core/derived_tensor.h"

namespace accel {

bool DerivedTensor::Source::is(const Tensor& t) const {
  std::shared_ptr<StorageImpl> alive = storage.lock();
  return alive != nullptr && alive == t.storage() && offset == t.storage_offset() && sizes == t.sizes() &&
         strides == t.strides() && dtype == t.dtype() && version == t.version();
}

bool DerivedTensor::can_keep(const Tensor& source) {
  return source.defined() && !source.storage()->has_been_released();
}

bool DerivedTensor::matches(std::initializer_list<const Tensor*> sources) const {
  if (!value_.defined() || sources.size() != sources_.size()) return false;
  size_t i = 0;
  for (const Tensor* t : sources) {
    if (!t->defined() || !sources_[i++].is(*t)) return false;
  }
  return true;
}

bool DerivedTensor::is_stale() const {
  for (const Source& s : sources_) {
    if (s.storage.expired()) return true;
  }
  return false;
}

Tensor DerivedTensor::get(std::initializer_list<const Tensor*> sources, DType dtype,
                          const std::function<Tensor()>& compute) {
  if (matches(sources) && value_.dtype() == dtype) return value_;
  reset();
  Tensor value = compute();
  for (const Tensor* t : sources) {
    if (!can_keep(*t)) return value;
  }
  for (const Tensor* t : sources) {
    sources_.push_back({t->storage(), t->storage_offset(), t->sizes(), t->strides(), t->dtype(), t->version()});
  }
  value_ = value;
  return value_;
}

void DerivedTensor::reset() {
  sources_.clear();
  value_ = Tensor();
}

}  // namespace accel
