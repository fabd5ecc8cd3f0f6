/// @file
/// DerivedTensor: a tensor computed from other tensors (a weight's 16-bit copy, weights stacked
/// for one GEMM) and kept while they are unchanged, so inference does not redo the work every
/// forward. get() returns the kept value while every source still views the same storage, at the
/// same offset, shape, strides and dtype, with the same version (in-place writes, optimizer steps,
/// load_state_dict and collectives all bump it); otherwise it computes the value again. Sources
/// whose storage ZeRO stage 3 frees between uses are never kept: the copy would undo the sharding.
#pragma once

#include <functional>
#include <initializer_list>
#include <memory>
#include <vector>

#include "core/tensor.h"

namespace accel {

class DerivedTensor {
 public:
  /// Whether a source can be remembered (defined, and its storage never released).
  static bool can_keep(const Tensor& source);

  /// The kept value if it still derives from these sources and has `dtype`, else compute()'s
  /// result (of that dtype), kept for next time when every source can_keep (returned without
  /// keeping otherwise).
  Tensor get(std::initializer_list<const Tensor*> sources, DType dtype, const std::function<Tensor()>& compute);
  /// Whether the kept value, if any, was derived from these sources as they are now.
  bool matches(std::initializer_list<const Tensor*> sources) const;
  /// Whether some source of the kept value is gone (its storage freed), so it can never match.
  bool is_stale() const;
  void reset();
  const Tensor& value() const { return value_; }

 private:
  struct Source {
    std::weak_ptr<StorageImpl> storage;
    int64_t offset = 0;
    Shape sizes, strides;
    DType dtype = kFloat32;
    uint64_t version = 0;
    bool is(const Tensor& t) const;
  };
  std::vector<Source> sources_;
  Tensor value_;
};

}  // namespace accel
