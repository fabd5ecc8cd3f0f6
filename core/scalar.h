/// @file
/// A number passed to a tensor op: a double, an integer or a bool, remembered as which, so
/// that `x + 1` keeps x's integer dtype and `x + 0.5` promotes an integer tensor to float.
#pragma once

#include <cstdint>
#include <limits>
#include <type_traits>

#include "core/dtype.h"

namespace accel {

class Scalar {
 public:
  enum class Kind : uint8_t { Floating, Integral, Boolean };

  Scalar() : Scalar(0) {}
  template <typename T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>, int> = 0>
  Scalar(T v) : kind_(Kind::Integral), i_(static_cast<int64_t>(v)), d_(static_cast<double>(v)) {}
  template <typename T, std::enable_if_t<std::is_floating_point_v<T>, int> = 0>
  Scalar(T v)
      : kind_(Kind::Floating), i_(saturating_int64(static_cast<double>(v))), d_(static_cast<double>(v)) {}
  Scalar(bool v) : kind_(Kind::Boolean), i_(v), d_(v) {}
  Scalar(Half v) : Scalar(static_cast<float>(v)) {}
  Scalar(BFloat16 v) : Scalar(static_cast<float>(v)) {}

  Kind kind() const { return kind_; }
  bool is_floating() const { return kind_ == Kind::Floating; }
  double to_double() const { return d_; }
  int64_t to_int() const { return i_; }
  template <typename T>
  T to() const {
    if constexpr (std::is_same_v<T, bool>) return i_ != 0 || d_ != 0.0;
    else if constexpr (std::is_integral_v<T>) return static_cast<T>(kind_ == Kind::Floating ? static_cast<int64_t>(d_) : i_);
    else return T(static_cast<opmath_t<T>>(d_));
  }

 private:
  // The integer view of a floating value: truncated, clamped to int64's range (a cast of an
  // out-of-range value, such as the -FLT_MAX of an attention mask, is undefined), NaN as 0.
  static int64_t saturating_int64(double v) {
    constexpr double kTwoTo63 = 9223372036854775808.0;
    if (v >= kTwoTo63) return std::numeric_limits<int64_t>::max();
    if (v < -kTwoTo63) return std::numeric_limits<int64_t>::min();
    return v == v ? static_cast<int64_t>(v) : 0;
  }

  Kind kind_;
  int64_t i_;
  double d_;
};

}  // namespace accel
