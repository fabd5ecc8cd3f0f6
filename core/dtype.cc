// The dtype traits table, IEEE half conversions and type promotion.
#include "core/dtype.h"

#include <array>

namespace accel {

namespace {
constexpr std::array<DTypeInfo, 7> kInfo = {{
    {"float32", "F32", "Float", 4, true},
    {"float64", "F64", "Double", 8, true},
    {"float16", "F16", "Half", 2, true},
    {"bfloat16", "BF16", "BFloat16", 2, true},
    {"int64", "I64", "Long", 8, false},
    {"int32", "I32", "Int", 4, false},
    {"bool", "BOOL", "Bool", 1, false},
}};
}  // namespace

const DTypeInfo& dtype_info(DType dtype) { return kInfo.at(static_cast<size_t>(dtype)); }

DType dtype_from_safetensors_name(const std::string& name) {
  for (size_t i = 0; i < kInfo.size(); ++i) {
    if (name == kInfo[i].safetensors_name) return static_cast<DType>(i);
  }
  ACCEL_FAIL("unsupported safetensors dtype \"", name,
             "\": expected one of F32, F64, F16, BF16, I64, I32, BOOL");
}

void throw_unsupported_dtype(const char* op, const char* device, DType dtype) {
  ACCEL_FAIL(op, ": no kernel for dtype ", dtype_name(dtype), " on device ", device);
}

// binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits.
uint16_t Half::round_from_float(float f) {
  uint32_t x = float_bits(f);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return uint16_t(sign | 0x7e00u);  // NaN
  if (abs >= 0x477ff000u) {
    // >= 65520 rounds to infinity (65504 is the largest finite half).
    return uint16_t(sign | 0x7c00u);
  }
  if (abs < 0x38800000u) {
    // Result is subnormal or zero: scale so that the half ulp (2^-24) is one unit, then round
    // to nearest even by adding 0.5 in float arithmetic (exact, since float has more bits).
    float magnitude = bits_float(abs);
    float scaled = magnitude * 16777216.0f;  // 2^24
    // Round half to even on an integer valued float.
    float rounded = scaled + 12582912.0f - 12582912.0f;  // 1.5 * 2^23 forces integer rounding
    return uint16_t(sign | uint32_t(rounded));
  }
  // Normal: rebias exponent from 127 to 15 and round the 13 dropped mantissa bits.
  uint32_t mantissa_odd = (abs >> 13) & 1u;
  abs += 0xc8000000u + 0xfffu + mantissa_odd;  // (15 - 127) << 23 rebias, then round
  return uint16_t(sign | (abs >> 13));
}

float Half::to_float(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {
    // zero or subnormal: value = mantissa * 2^-24
    float magnitude = float(mantissa) * 5.9604644775390625e-08f;
    return bits_float(sign | float_bits(magnitude));
  }
  if (exponent == 0x1f) return bits_float(sign | 0x7f800000u | (mantissa << 13));
  return bits_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

namespace {
int promotion_rank(DType dtype) {
  switch (dtype) {
    case DType::Bool: return 0;
    case DType::Int32: return 1;
    case DType::Int64: return 2;
    case DType::Float16: return 3;
    case DType::BFloat16: return 3;
    case DType::Float32: return 4;
    case DType::Float64: return 5;
  }
  return 0;
}
}  // namespace

DType promote_types(DType a, DType b) {
  if (a == b) return a;
  // float16 with bfloat16 has no common 16-bit type: both fit in float32.
  if ((a == kFloat16 && b == kBFloat16) || (a == kBFloat16 && b == kFloat16)) return kFloat32;
  return promotion_rank(a) >= promotion_rank(b) ? a : b;
}

}  // namespace accel
