/// @file
/// Element types: the DType enum, the 16-bit float types Half and BFloat16 (conversions round
/// to nearest even, as IEEE and PyTorch do), the per-dtype traits table, type promotion, and
/// the visit_* helpers that kernels use to switch on dtype.
#pragma once

#include <cstdint>
#include <cstring>
#include <ostream>
#include <string>

#include "core/error.h"

namespace accel {

enum class DType : uint8_t { Float32, Float64, Float16, BFloat16, Int64, Int32, Bool };

inline constexpr DType kFloat32 = DType::Float32;
inline constexpr DType kFloat64 = DType::Float64;
inline constexpr DType kFloat16 = DType::Float16;
inline constexpr DType kBFloat16 = DType::BFloat16;
inline constexpr DType kInt64 = DType::Int64;
inline constexpr DType kInt32 = DType::Int32;
inline constexpr DType kBool = DType::Bool;

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// bfloat16: the upper 16 bits of an IEEE float32.
struct BFloat16 {
  uint16_t bits = 0;
  BFloat16() = default;
  BFloat16(float f) : bits(round_from_float(f)) {}
  operator float() const { return bits_float(uint32_t(bits) << 16); }
  static BFloat16 from_bits(uint16_t b) {
    BFloat16 h;
    h.bits = b;
    return h;
  }
  static uint16_t round_from_float(float f) {
    uint32_t u = float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
    uint32_t rounding_bias = 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
    return uint16_t((u + rounding_bias) >> 16);
  }
};

/// IEEE 754 binary16.
struct Half {
  uint16_t bits = 0;
  Half() = default;
  Half(float f) : bits(round_from_float(f)) {}
  operator float() const { return to_float(bits); }
  static Half from_bits(uint16_t b) {
    Half h;
    h.bits = b;
    return h;
  }
  static uint16_t round_from_float(float f);
  static float to_float(uint16_t h);
};

/// Traits of one dtype: what the safetensors header calls it, how LibTorch prints it.
struct DTypeInfo {
  const char* name;              ///< "float32"
  const char* safetensors_name;  ///< "F32"
  const char* torch_type_name;   ///< "Float" as in CPUFloatType
  int itemsize;                  ///< bytes per element
  bool is_floating;
};

const DTypeInfo& dtype_info(DType dtype);
inline int itemsize(DType dtype) { return dtype_info(dtype).itemsize; }
inline bool is_floating(DType dtype) { return dtype_info(dtype).is_floating; }
inline const char* dtype_name(DType dtype) { return dtype_info(dtype).name; }
DType dtype_from_safetensors_name(const std::string& name);  ///< throws on unknown names
/// The result type of a binary op on two tensors, as torch.promote_types.
DType promote_types(DType a, DType b);

inline std::ostream& operator<<(std::ostream& out, DType dtype) { return out << dtype_name(dtype); }

template <typename T>
struct CppTypeToDType;
template <> struct CppTypeToDType<float> { static constexpr DType value = kFloat32; };
template <> struct CppTypeToDType<double> { static constexpr DType value = kFloat64; };
template <> struct CppTypeToDType<Half> { static constexpr DType value = kFloat16; };
template <> struct CppTypeToDType<BFloat16> { static constexpr DType value = kBFloat16; };
template <> struct CppTypeToDType<int64_t> { static constexpr DType value = kInt64; };
template <> struct CppTypeToDType<int32_t> { static constexpr DType value = kInt32; };
template <> struct CppTypeToDType<bool> { static constexpr DType value = kBool; };
template <typename T>
inline constexpr DType dtype_of = CppTypeToDType<T>::value;

/// The type kernels compute in: 16-bit floats compute in float and round once at the store.
template <typename T> struct OpMath { using type = T; };
template <> struct OpMath<Half> { using type = float; };
template <> struct OpMath<BFloat16> { using type = float; };
template <typename T>
using opmath_t = typename OpMath<T>::type;

[[noreturn]] void throw_unsupported_dtype(const char* op, const char* device, DType dtype);

/// `visit_floating(dtype, "softmax", "cpu", [&]<typename T>() { ... });`
template <typename F>
decltype(auto) visit_floating(DType dtype, const char* op, const char* device, F&& f) {
  switch (dtype) {
    case DType::Float32: return f.template operator()<float>();
    case DType::Float64: return f.template operator()<double>();
    case DType::Float16: return f.template operator()<Half>();
    case DType::BFloat16: return f.template operator()<BFloat16>();
    default: throw_unsupported_dtype(op, device, dtype);
  }
}

template <typename F>
decltype(auto) visit_numeric(DType dtype, const char* op, const char* device, F&& f) {
  switch (dtype) {
    case DType::Int64: return f.template operator()<int64_t>();
    case DType::Int32: return f.template operator()<int32_t>();
    default: return visit_floating(dtype, op, device, std::forward<F>(f));
  }
}

template <typename F>
decltype(auto) visit_all(DType dtype, const char* op, const char* device, F&& f) {
  if (dtype == DType::Bool) return f.template operator()<bool>();
  return visit_numeric(dtype, op, device, std::forward<F>(f));
}

template <typename F>
decltype(auto) visit_index(DType dtype, const char* op, const char* device, F&& f) {
  switch (dtype) {
    case DType::Int64: return f.template operator()<int64_t>();
    case DType::Int32: return f.template operator()<int32_t>();
    default: throw_unsupported_dtype(op, device, dtype);
  }
}

}  // namespace accel
