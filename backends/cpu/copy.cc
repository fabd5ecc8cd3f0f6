// CPU copies and fills: strided copy with dtype conversion (the kernel behind copy_,
// contiguous() and to(dtype)), fill with a scalar, arange.
#include <cstring>

#include "backends/cpu/loops.h"
#include "core/kernels.h"

namespace accel::cpu {

namespace {

template <typename To, typename From>
To convert(From value) {
  if constexpr (std::is_same_v<To, bool>) {
    return static_cast<opmath_t<From>>(value) != opmath_t<From>(0);
  } else if constexpr (std::is_same_v<From, bool>) {
    return To(opmath_t<To>(value ? 1 : 0));
  } else {
    return To(static_cast<opmath_t<To>>(static_cast<opmath_t<From>>(value)));
  }
}

void copy_kernel(const Tensor& src, const Tensor& dst) {
  if (src.dtype() == dst.dtype() && src.is_contiguous() && dst.is_contiguous()) {
    if (src.data_ptr() != dst.data_ptr()) {
      // Large copies split across threads; memcpy saturates one core's bandwidth otherwise.
      const char* from = static_cast<const char*>(src.data_ptr());
      char* to = static_cast<char*>(dst.data_ptr());
      parallel_for(static_cast<int64_t>(dst.nbytes()), 1 << 20, [&](int64_t begin, int64_t end) {
        std::memcpy(to + begin, from + begin, end - begin);
      });
    }
    return;
  }
  visit_all(dst.dtype(), "copy", "cpu", [&]<typename To>() {
    visit_all(src.dtype(), "copy", "cpu", [&]<typename From>() {
      map_elementwise<To, From>(dst, [](From v) { return convert<To, From>(v); }, {&src});
    });
  });
}

void fill_kernel(const Tensor& dst, Scalar value) {
  visit_all(dst.dtype(), "fill", "cpu", [&]<typename T>() {
    T v = value.to<T>();
    map_elementwise<T>(dst, [v]() { return v; }, {});
  });
}

void arange_kernel(const Tensor& dst, double start, double step) {
  visit_numeric(dst.dtype(), "arange", "cpu", [&]<typename T>() {
    T* out = dst.data_ptr<T>();
    parallel_for(dst.numel(), kGrainSize, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        out[i] = T(static_cast<opmath_t<T>>(start + static_cast<double>(i) * step));
      }
    });
  });
}

}  // namespace

ACCEL_REGISTER_KERNEL(copy, DeviceType::CPU, copy_kernel);
ACCEL_REGISTER_KERNEL(fill, DeviceType::CPU, fill_kernel);
ACCEL_REGISTER_KERNEL(arange, DeviceType::CPU, arange_kernel);

}  // namespace accel::cpu
