/// @file
/// Device math overloaded on float and double (the compute types), and the GELU formulas
/// of backends/cpu/pointwise.cc, so CUDA kernels compute the same functions as the CPU's: the
/// erf form's cdf(x) as erfc(-x / sqrt 2) / 2, accurate in the negative tail where
/// 1 + erf(x / sqrt 2) cancels (the CPU's float32 chunks get it from exp(-x^2 / 2) erfcx).
#pragma once

namespace accel::cuda {

__device__ __forceinline__ float dexp(float x) { return expf(x); }
__device__ __forceinline__ double dexp(double x) { return exp(x); }
__device__ __forceinline__ float dlog(float x) { return logf(x); }
__device__ __forceinline__ double dlog(double x) { return log(x); }
__device__ __forceinline__ float dsqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double dsqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float dtanh(float x) { return tanhf(x); }
__device__ __forceinline__ double dtanh(double x) { return tanh(x); }
__device__ __forceinline__ float derf(float x) { return erff(x); }
__device__ __forceinline__ double derf(double x) { return erf(x); }
__device__ __forceinline__ float derfc(float x) { return erfcf(x); }
__device__ __forceinline__ double derfc(double x) { return erfc(x); }
__device__ __forceinline__ float dpow(float x, float y) { return powf(x, y); }
__device__ __forceinline__ double dpow(double x, double y) { return pow(x, y); }

inline constexpr double kSqrt1_2 = 0.70710678118654752440;
inline constexpr double kInvSqrt2Pi = 0.39894228040143267794;
inline constexpr double kSqrt2OverPi = 0.79788456080286535588;
inline constexpr double kGeluTanhCoeff = 0.044715;

template <typename C>
__device__ __forceinline__ C gelu_exact(C x) { return C(0.5) * x * derfc(-x * C(kSqrt1_2)); }
template <typename C>
__device__ __forceinline__ C gelu_tanh(C x) {
  return C(0.5) * x * (C(1) + dtanh(C(kSqrt2OverPi) * (x + C(kGeluTanhCoeff) * x * x * x)));
}
template <typename C>
__device__ __forceinline__ C gelu_exact_grad(C x) {
  C cdf = C(0.5) * derfc(-x * C(kSqrt1_2));
  C pdf = dexp(C(-0.5) * x * x) * C(kInvSqrt2Pi);
  return cdf + x * pdf;
}
template <typename C>
__device__ __forceinline__ C gelu_tanh_grad(C x) {
  C x2 = x * x;
  C t = dtanh(C(kSqrt2OverPi) * (x + C(kGeluTanhCoeff) * x2 * x));
  C d_inner = C(kSqrt2OverPi) * (C(1) + C(3 * kGeluTanhCoeff) * x2);
  return C(0.5) * (C(1) + t) + C(0.5) * x * (C(1) - t * t) * d_inner;
}

}  // namespace accel::cuda
