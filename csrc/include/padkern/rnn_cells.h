// Gate equations of the LSTM, GRU and plain (Elman) RNN cells, written once for the CPU kernels and
// the CUDA kernels (`__host__ __device__`): the CPU tests exercise the maths the GPU runs.
// Equations and gate orders are PyTorch's (torch.nn.LSTM: i, f, g, o; torch.nn.GRU: r, z, n;
// torch.nn.RNN: h = tanh or relu of both projections and both biases).
// `A` is the accumulation type: float for float/half/bfloat16 data, double for double.
#pragma once
#include "padkern/scalar_math.h"

namespace padkern {

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

// ---- RNN (Elman) ---------------------------------------------------------------------
// Numbered as in the rnn_recurrence schema (padkern/_schemas.py).
enum RnnNonlinearity : int64_t { kRnnTanh = 0, kRnnRelu = 1 };

// pre: both projections and both biases.
template <typename A>
PADKERN_HOST_DEVICE A rnn_forward(A pre, bool relu) {
  if (relu) return pre < A(0) ? A(0) : pre;  // NaN propagates, as torch.relu
  return tanh_of(pre);
}

// The gradient of the pre-activation from the step's output h, as torch's backward
// reads it: relu blocks dh where h <= 0 and passes it elsewhere, NaN included
// (threshold_backward); tanh scales by 1 - h^2.
template <typename A>
PADKERN_HOST_DEVICE A rnn_backward(A h, A dh, bool relu) {
  if (relu) return h <= A(0) ? A(0) : dh;
  return dh * (A(1) - h * h);
}

}  // namespace padkern
