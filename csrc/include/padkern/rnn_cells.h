// Gate equations of the LSTM and GRU cells, written once for the CPU kernels and
// the CUDA kernels (`__host__ __device__`): the CPU tests exercise the maths the GPU runs.
// Equations and gate orders are PyTorch's (torch.nn.LSTM: i, f, g, o; torch.nn.GRU: r, z, n).
// `A` is the accumulation type: float for float/half/bfloat16 data, double for double.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "padkern/ragged_layout.h"  // PADKERN_HOST_DEVICE

namespace padkern {

#if !defined(__CUDA_ARCH__)
// Host exp without a libm call, so the compiler vectorises the gate loops (a libm
// call per element made the CPU gate loop 2x slower than its GEMMs). Cephes' range
// reduction e^x = 2^n e^r, |r| <= ln2/2, then a polynomial (float: ~1 ulp) or Pade
// approximant (double: ~1e-16 relative) of e^r, and 2^n built in the exponent bits.
PADKERN_HOST_DEVICE float host_exp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
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
  const int32_t bits = (n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return e_r * scale;
}

PADKERN_HOST_DEVICE double host_exp(double x) {
  x = x < -708.0 ? -708.0 : (x > 709.0 ? 709.0 : x);
  const double z = x * 1.4426950408889634073599;
  const int64_t n = static_cast<int64_t>(z + (z >= 0.0 ? 0.5 : -0.5));
  const double nf = static_cast<double>(n);
  const double r = (x - nf * 6.93145751953125e-1) - nf * 1.42860682030941723212e-6;
  const double rr = r * r;
  const double p = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr + 9.99999999999999999910e-1);
  const double q = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr + 2.27265548208155028766e-1) * rr +
                   2.00000000000000000009e0;
  const double e_r = 1.0 + 2.0 * p / (q - p);
  const int64_t bits = (n + 1023) << 52;
  double scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return e_r * scale;
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

// ---- LSTM ---------------------------------------------------------------------------
// Pre-activations include both projections and both biases.
template <typename A>
struct LstmGates {
  A i, f, g, o;  // activated
};

template <typename A>
struct LstmStep {
  LstmGates<A> gates;
  A c, h;  // new cell and hidden state
};

template <typename A>
PADKERN_HOST_DEVICE LstmStep<A> lstm_forward(A pre_i, A pre_f, A pre_g, A pre_o, A c_prev) {
  LstmStep<A> s;
  s.gates.i = sigmoid_of(pre_i);
  s.gates.f = sigmoid_of(pre_f);
  s.gates.g = tanh_of(pre_g);
  s.gates.o = sigmoid_of(pre_o);
  s.c = s.gates.f * c_prev + s.gates.i * s.gates.g;
  s.h = s.gates.o * tanh_of(s.c);
  return s;
}

template <typename A>
struct LstmGrad {
  A d_i, d_f, d_g, d_o;  // gradients of the pre-activations
  A dc_prev;
};

// dh, dc: gradients flowing into this step's h and c (from its output, later steps, h_n/c_n).
template <typename A>
PADKERN_HOST_DEVICE LstmGrad<A> lstm_backward(const LstmGates<A>& gates, A c, A c_prev, A dh, A dc) {
  const A tanh_c = tanh_of(c);
  dc += dh * gates.o * (A(1) - tanh_c * tanh_c);
  LstmGrad<A> g;
  g.d_o = dh * tanh_c * gates.o * (A(1) - gates.o);
  g.d_i = dc * gates.g * gates.i * (A(1) - gates.i);
  g.d_g = dc * gates.i * (A(1) - gates.g * gates.g);
  g.d_f = dc * c_prev * gates.f * (A(1) - gates.f);
  g.dc_prev = dc * gates.f;
  return g;
}

// ---- GRU ----------------------------------------------------------------------------
// x_*: input projection plus b_i*; hh_*: recurrent projection plus b_h* (kept apart
// because PyTorch applies the reset gate to the whole of hh_n, its bias included).
template <typename A>
struct GruStep {
  A r, z, n;  // activated gates
  A h;        // new hidden state
};

template <typename A>
PADKERN_HOST_DEVICE GruStep<A> gru_forward(A x_r, A x_z, A x_n, A hh_r, A hh_z, A hh_n, A h_prev) {
  GruStep<A> s;
  s.r = sigmoid_of(x_r + hh_r);
  s.z = sigmoid_of(x_z + hh_z);
  s.n = tanh_of(x_n + s.r * hh_n);
  s.h = (A(1) - s.z) * s.n + s.z * h_prev;
  return s;
}

template <typename A>
struct GruGrad {
  A d_r, d_z, d_n;   // gradients of the pre-activations (x_* side; hh_r, hh_z share d_r, d_z)
  A d_hh_n;          // gradient of hh_n = d_n * r
  A dh_prev_direct;  // the z * h_prev path; the W_hh path is added by the caller
};

template <typename A>
PADKERN_HOST_DEVICE GruGrad<A> gru_backward(A r, A z, A n, A hh_n, A h_prev, A dh) {
  GruGrad<A> g;
  const A dn = dh * (A(1) - z);
  const A dz = dh * (h_prev - n);
  g.d_n = dn * (A(1) - n * n);
  g.d_hh_n = g.d_n * r;
  g.d_r = g.d_n * hh_n * r * (A(1) - r);
  g.d_z = dz * z * (A(1) - z);
  g.dh_prev_direct = dh * z;
  return g;
}

}  // namespace padkern
