// Scalar maths shared by the CPU and CUDA kernels: exp, sigmoid, tanh, the normal CDF and the
// epilogue activations of the matmuls. On the device, CUDA's own functions; on the
// host, branch-free versions that the compiler vectorises.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "padkern/ragged_layout.h"  // PADKERN_HOST_DEVICE

namespace padkern {

#if !defined(__CUDA_ARCH__)
// 2^k for |k| within the exponent's normal range, built in the exponent bits.
template <typename F, typename I, int Bias, int MantissaBits>
PADKERN_HOST_DEVICE F exp2_half(I k) {
  const I bits = (k + Bias) << MantissaBits;
  F scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return scale;
}

// Cephes' range reduction for float: n = round(x log2 e) and r = x - n ln2, with ln2 split as
// kLn2High + kLn2Low, the first short enough that n times it is exact.
constexpr float kLog2e = 1.44269504088896341f, kLn2High = 0.693359375f, kLn2Low = -2.12194440e-4f;

// e^r for |r| <= ln2/2 (Cephes' polynomial, ~1 ulp).
PADKERN_HOST_DEVICE float exp_near_zero(float r) {
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  return p * r * r + r + 1.0f;
}

// The argument below which host_exp gives its floor, e^-87 (float) or e^-708 (double), not e^x.
template <typename F>
constexpr F host_exp_floor() {
  return sizeof(F) == sizeof(float) ? F(-87) : F(-708);
}

// Host exp without a libm call, so the compiler vectorises the gate loops (a libm
// call per element made the CPU gate loop 2x slower than its GEMMs). Cephes' range
// reduction e^x = 2^n e^r, |r| <= ln2/2, then a polynomial (float: ~1 ulp) or Pade
// approximant (double: ~1e-16 relative) of e^r, and 2^n built in the exponent bits.
// Overflow, exp(+inf) included, gives inf as in torch (so silu(-inf) = -inf * sigmoid(-inf)
// is NaN): the upper clamp lies past ln(FLT_MAX), and 2^n is applied as two exact halves whose
// product overflows exactly when e^x does. A select on the input instead kept gcc from
// vectorising the AVX2/AVX-512 gate loops (1.6x slower LSTM forward).
PADKERN_HOST_DEVICE float host_exp(float x) {
  x = x < host_exp_floor<float>() ? host_exp_floor<float>() : (x > 89.0f ? 89.0f : x);
  const float z = x * kLog2e;
  const int32_t n = static_cast<int32_t>(z + (z >= 0.0f ? 0.5f : -0.5f));
  const float nf = static_cast<float>(n);
  const float r = (x - nf * kLn2High) - nf * kLn2Low;
  return exp_near_zero(r) * exp2_half<float, int32_t, 127, 23>(n >> 1) *
         exp2_half<float, int32_t, 127, 23>(n - (n >> 1));
}

// e^(high + low) for high + low in [-87, 0], high exact and |low| < 2, without rounding the
// sum (which costs |high| ulps): low joins the small remainder after Cephes' reduction. high
// - n ln2's leading part is exact wherever |high| >= 1 (both are multiples of 2^-23 and their
// difference is under 2); below, it rounds by at most 2^-25, as the next step would. No clamps:
// the caller keeps the sum in range.
PADKERN_HOST_DEVICE float host_exp_of_sum(float high, float low) {
  const float z = (high + low) * kLog2e;
  const int32_t n = static_cast<int32_t>(z - 0.5f);  // rounds a non-positive z
  const float nf = static_cast<float>(n);
  const float r = ((high - nf * kLn2High) + low) - nf * kLn2Low;
  return exp_near_zero(r) * exp2_half<float, int32_t, 127, 23>(n);
}

// e^x for a softmax's arguments: scores less their peak or log-sum-exp, so x <= 0 but for
// rounding, or NaN. host_exp's reduction and polynomial, with n rounded to nearest by adding and
// subtracting 1.5 * 2^23 (exact for |z| < 2^22) and 2^n applied whole: such arguments never come
// near host_exp's overflow, which needs 2^n in two halves and a rounding select. The clamps keep
// n within float's exponents: e^x is host_exp's floor below -87, e^88 above 88 (+inf included,
// which reaches a softmax's exp only in a row a NaN already spoils). The same results as host_exp
// (1.02 ulp at most) but where x log2e lies within rounding of a half-integer, which the two
// roundings of n break differently (1 ulp), in 35% less time in the attention's softmax rows on a
// Zen 5 core. The rounding needs round-to-nearest (the default) and no reassociation, which
// would fold the addition and subtraction away:
#if defined(__ASSOCIATIVE_MATH__) || defined(__FAST_MATH__)
#error "padkern's host_exp_nonpositive rounds by adding and subtracting 1.5 * 2^23: build without -fassociative-math"
#endif
PADKERN_HOST_DEVICE float host_exp_nonpositive(float x) {
  x = x < host_exp_floor<float>() ? host_exp_floor<float>() : (x > 88.0f ? 88.0f : x);
  const float z = x * kLog2e;
  const float rounded = (z + 12582912.0f) - 12582912.0f;
  const int32_t n = static_cast<int32_t>(rounded);
  const float r = (x - rounded * kLn2High) - rounded * kLn2Low;
  return exp_near_zero(r) * exp2_half<float, int32_t, 127, 23>(n);
}

PADKERN_HOST_DEVICE double host_exp(double x) {
  x = x < host_exp_floor<double>() ? host_exp_floor<double>() : (x > 710.0 ? 710.0 : x);
  const double z = x * 1.4426950408889634073599;
  const int64_t n = static_cast<int64_t>(z + (z >= 0.0 ? 0.5 : -0.5));
  const double nf = static_cast<double>(n);
  const double r = (x - nf * 6.93145751953125e-1) - nf * 1.42860682030941723212e-6;
  const double rr = r * r;
  const double p = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr + 9.99999999999999999910e-1);
  const double q = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr + 2.27265548208155028766e-1) * rr +
                   2.00000000000000000009e0;
  const double e_r = 1.0 + 2.0 * p / (q - p);
  return e_r * exp2_half<double, int64_t, 1023, 52>(n >> 1) * exp2_half<double, int64_t, 1023, 52>(n - (n >> 1));
}

// (double: host_exp itself; its softmax loops are not the hot ones.)
PADKERN_HOST_DEVICE double host_exp_nonpositive(double x) { return host_exp(x); }
#endif

PADKERN_HOST_DEVICE float exp_of(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  return host_exp(x);
#endif
}
PADKERN_HOST_DEVICE double exp_of(double x) {
#if defined(__CUDA_ARCH__)
  return ::exp(x);
#else
  return host_exp(x);
#endif
}
template <typename A>
PADKERN_HOST_DEVICE A sigmoid_of(A x) {
  return A(1) / (A(1) + exp_of(-x));
}

// Host: tanh(x) = 2 sigmoid(2x) - 1 through the vectorisable exp (absolute error ~1 ulp of 1).
PADKERN_HOST_DEVICE float tanh_of(float x) {
#if defined(__CUDA_ARCH__)
  return tanhf(x);
#else
  return 2.0f * sigmoid_of(2.0f * x) - 1.0f;
#endif
}
PADKERN_HOST_DEVICE double tanh_of(double x) {
#if defined(__CUDA_ARCH__)
  return ::tanh(x);
#else
  return 2.0 * sigmoid_of(2.0 * x) - 1.0;
#endif
}

#if !defined(__CUDA_ARCH__)
// Host Phi(z) = P(N(0, 1) <= z) = erfc(-z/sqrt2)/2 in float, branch-free so the epilogue loops
// vectorise (libm's erf kept them scalar: gelu over [8300, 512] took 26 ms on a Zen 5 core,
// 3.7x its GEMM). With t = |z|/sqrt2, erfc(t) = u e^(-t^2 + P(v)), u = 1/(1 + t/2), v = 2u - 1,
// P a degree-9 minimax-weighted fit of log(erfc(t)/u) + t^2 over t in [0, inf) (error 9e-8).
// Phi is erfc(t)/2 below zero and 1 - erfc(t)/2 above, so neither tail cancels. The exponent
// -z^2/2 + P is -zh^2/2 (exact, zh being z's leading 12 bits) plus -(z - zh)(z + zh)/2 + P,
// never rounded as one sum: a rounded z^2 alone costs up to z^2/2 ulps (130 near z = -12).
// Relative error within 10 ulps from z = -12.94 up (8.9 measured over every float;
// tests/cpp/scalar_math_test.cpp). Below, Phi is under 1.4e-38, the foot of float's normal
// range, and given as 0, so gelu(-inf) = -inf * 0 is NaN as the formula's; NaN stays NaN.
// The clamps keep every intermediate a normal float: a subnormal one costs x86 a microcode
// assist (100+ cycles), which made the loop 2-3x slower on wide inputs when z was clamped to
// +-13 (there erfc(t)/2 is 5e-39); above 6, 1 - erfc(t)/2 rounds to 1 anyway.
PADKERN_HOST_DEVICE float host_normal_cdf(float z) {
  const float zc = z < -12.94f ? -12.94f : (z > 6.0f ? 6.0f : z);  // NaN passes through
  const float t = std::fabs(zc) * 0.70710678118654752440f;
  const float u = 1.0f / (1.0f + 0.5f * t);
  const float v = 2.0f * u - 1.0f;
  // P(v) by Estrin's scheme: its chain of dependent operations is half of Horner's, which
  // on AVX2 left the loop waiting on latency (12% slower).
  const float v2 = v * v, v4 = v2 * v2;
  const float c01 = 6.726422e-1f * v - 6.7179406e-1f, c23 = -4.6873722e-2f * v + 4.734356e-2f;
  const float c45 = 8.698637e-3f * v - 9.876406e-3f, c67 = -2.040606e-3f * v + 1.7813325e-3f;
  const float c89 = 3.2961072e-4f * v - 2.1054977e-4f;
  const float p = (c01 + v2 * c23) + v4 * ((c45 + v2 * c67) + v4 * c89);
  uint32_t bits;
  std::memcpy(&bits, &zc, sizeof(bits));
  bits &= 0xFFFFF000u;
  float zh;
  std::memcpy(&zh, &bits, sizeof(zh));
  const float half_erfc = 0.5f * u * host_exp_of_sum(-0.5f * zh * zh, p - 0.5f * ((zc - zh) * (zc + zh)));
  const float lower = z < -12.94f ? 0.0f : half_erfc;
  return zc < 0.0f ? lower : 1.0f - half_erfc;
}
#endif

PADKERN_HOST_DEVICE float normal_cdf_of(float z) {
#if defined(__CUDA_ARCH__)
  return normcdff(z);
#else
  return host_normal_cdf(z);
#endif
}
// float64 stays on libm (accurate to an ulp; its epilogue is not a hot path).
PADKERN_HOST_DEVICE double normal_cdf_of(double z) {
#if defined(__CUDA_ARCH__)
  return normcdf(z);
#else
  return 0.5 * std::erfc(-z * 0.70710678118654752440);
#endif
}

// Epilogue activations, numbered as in the grouped_linear schema (padkern/_schemas.py).
enum Activation : int { kIdentity = 0, kRelu = 1, kGelu = 2, kSilu = 3 };

template <int Act, typename A>
PADKERN_HOST_DEVICE A activate(A z) {
  if (Act == kRelu) return z < A(0) ? A(0) : z;  // NaN propagates, as torch.relu
  if (Act == kGelu) return z * normal_cdf_of(z);  // the erf form, not tanh's approximation
  if (Act == kSilu) return z * sigmoid_of(z);
  return z;
}

}  // namespace padkern
