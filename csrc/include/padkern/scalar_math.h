// Scalar maths shared by the CPU and CUDA kernels: exp, sigmoid, tanh, and the
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

// Host exp without a libm call, so the compiler vectorises the gate loops (a libm
// call per element made the CPU gate loop 2x slower than its GEMMs). Cephes' range
// reduction e^x = 2^n e^r, |r| <= ln2/2, then a polynomial (float: ~1 ulp) or Pade
// approximant (double: ~1e-16 relative) of e^r, and 2^n built in the exponent bits.
// Overflow, exp(+inf) included, gives inf as in torch (so silu(-inf) = -inf * sigmoid(-inf)
// is NaN): the upper clamp lies past ln(FLT_MAX), and 2^n is applied as two exact halves whose
// product overflows exactly when e^x does. A select on the input instead kept gcc from
// vectorising the AVX2/AVX-512 gate loops (1.6x slower LSTM forward).
PADKERN_HOST_DEVICE float host_exp(float x) {
  x = x < -87.0f ? -87.0f : (x > 89.0f ? 89.0f : x);
  const float z = x * 1.44269504088896341f;
  const int32_t n = static_cast<int32_t>(z + (z >= 0.0f ? 0.5f : -0.5f));
  const float nf = static_cast<float>(n);
  const float r = (x - nf * 0.693359375f) + nf * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e_r = p * r * r + r + 1.0f;
  return e_r * exp2_half<float, int32_t, 127, 23>(n >> 1) * exp2_half<float, int32_t, 127, 23>(n - (n >> 1));
}

PADKERN_HOST_DEVICE double host_exp(double x) {
  x = x < -708.0 ? -708.0 : (x > 710.0 ? 710.0 : x);
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

PADKERN_HOST_DEVICE float erf_of(float x) {
#if defined(__CUDA_ARCH__)
  return erff(x);
#else
  return std::erf(x);
#endif
}
PADKERN_HOST_DEVICE double erf_of(double x) {
#if defined(__CUDA_ARCH__)
  return ::erf(x);
#else
  return std::erf(x);
#endif
}

// Epilogue activations, numbered as in the grouped_linear schema (padkern/_schemas.py).
enum Activation : int { kIdentity = 0, kRelu = 1, kGelu = 2, kSilu = 3 };

template <int Act, typename A>
PADKERN_HOST_DEVICE A activate(A z) {
  if (Act == kRelu) return z < A(0) ? A(0) : z;  // NaN propagates, as torch.relu
  if (Act == kGelu) return A(0.5) * z * (A(1) + erf_of(z * A(0.70710678118654752440)));
  if (Act == kSilu) return z * sigmoid_of(z);
  return z;
}

}  // namespace padkern
