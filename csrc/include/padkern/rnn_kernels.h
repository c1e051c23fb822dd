// Host entry points of the CUDA LSTM/GRU/RNN recurrences (csrc/cuda/lstm.cu, gru.cu, rnn.cu).
// Plain C++ with raw pointers: the torch bindings live in csrc/cuda/rnn_bindings.cpp.
//
// Shapes: B sequences, L tokens, H hidden, G = 4H (LSTM), 3H (GRU) or H (RNN).
// All pointers are device pointers to contiguous buffers; `offsets` [B+1] int64.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace padkern {
namespace cuda {

enum class ElementType { Float32, Float64, Float16, BFloat16 };

// Shared memory every per-sequence block needs whatever its weights do: state vectors of H
// accumulator elements each (forward: h, h_next, and c for the LSTM; backward: the hidden
// and cell gradients and a step's gate gradients). The weights join them when they fit too.
struct StateVectors {
  int64_t forward, backward;
};
constexpr StateVectors kLstmStateVectors{3, 6}, kGruStateVectors{2, 4}, kRnnStateVectors{2, 2};

struct LstmForwardArgs {
  const void* gates_x;  // [L, G]: input projection plus both biases
  const int64_t* offsets;
  const void* w_hh_t;   // [H, G]: w_hh transposed, so a step's reads coalesce across hidden units
  const void* h0;       // [B, H]
  const void* c0;       // [B, H]
  void* output;         // [L, H]
  void* h_n;            // [B, H]
  void* c_n;            // [B, H]
  void* saved_gates;    // [L, G] activated gates, or null (inference)
  void* saved_cell;     // [L, H] cell states, or null
  int64_t tokens, batch, hidden;  // L, B, H
  bool reverse;
};

struct LstmBackwardArgs {
  const void* grad_output;  // [L, H]
  const void* grad_h_n;     // [B, H]
  const void* grad_c_n;     // [B, H]
  const void* saved_gates;  // [L, G]
  const void* saved_cell;   // [L, H]
  const int64_t* offsets;
  const void* w_hh;         // [G, H]
  const void* c0;           // [B, H]
  void* grad_gates;         // [L, G]
  void* grad_h0;            // [B, H]
  void* grad_c0;            // [B, H]
  int64_t tokens, batch, hidden;  // L, B, H
  bool reverse;
};

struct GruForwardArgs {
  const void* gates_x;  // [L, G]: input projection plus b_ih
  const int64_t* offsets;
  const void* w_hh_t;   // [H, G]
  const void* b_hh;     // [G]
  const void* h0;       // [B, H]
  void* output;         // [L, H]
  void* h_n;            // [B, H]
  void* saved_gates;    // [L, G] activated r, z, n, or null
  void* saved_hh_n;     // [L, H] h W_hn^T + b_hn, or null
  int64_t tokens, batch, hidden;  // L, B, H
  bool reverse;
};

struct GruBackwardArgs {
  const void* grad_output;  // [L, H]
  const void* grad_h_n;     // [B, H]
  const void* saved_gates;  // [L, G]
  const void* saved_hh_n;   // [L, H]
  const void* output;       // [L, H]
  const int64_t* offsets;
  const void* w_hh;         // [G, H]
  const void* h0;           // [B, H]
  void* grad_gates_x;       // [L, G]
  void* grad_gates_hh;      // [L, G]
  void* grad_h0;            // [B, H]
  int64_t tokens, batch, hidden;  // L, B, H
  bool reverse;
};

struct RnnForwardArgs {
  const void* gates_x;  // [L, H]: input projection plus both biases
  const int64_t* offsets;
  const void* w_hh_t;   // [H, H]: w_hh transposed, so a step's reads coalesce across hidden units
  const void* h0;       // [B, H]
  void* output;         // [L, H]
  void* h_n;            // [B, H]
  int64_t tokens, batch, hidden;  // L, B, H
  bool reverse;
  bool relu;            // relu, else tanh
};

struct RnnBackwardArgs {
  const void* grad_output;  // [L, H]
  const void* grad_h_n;     // [B, H]
  const void* output;       // [L, H]: the forward's h, from which its derivative follows
  const int64_t* offsets;
  const void* w_hh;         // [H, H]
  void* grad_pre;           // [L, H]: gradient of the pre-activation (of gates_x, and of h W_hh^T)
  void* grad_h0;            // [B, H]
  int64_t tokens, batch, hidden;  // L, B, H
  bool reverse;
  bool relu;
};

// The persistent forward recurrences (persistent_rnn.cu): one cooperative grid runs every
// step, each block keeping its rows of w_hh in shared memory (persistent_rnn_plan.h).
// Hidden states and state rows are kept in the longest-first order of the sequences.
struct PersistentRnnArgs {
  const void* gates_x;            // [L, G*H]: input projection plus b_ih (and b_hh for the LSTM)
  const int64_t* offsets;         // [B+1]
  const int64_t* order;           // [B]: the sequences, longest first
  const int64_t* sorted_lengths;  // [B]: their lengths (clamped as sequence_span), descending
  const void* w_hh;               // [G*H, H] contiguous
  const void* b_hh;               // [G*H] (GRU) or null
  void* hidden_ring;              // [2, B, H]: running h in sorted order; [0] holds h0 on entry
  float* state;                   // [B, H] in sorted order: c (LSTM) or h (GRU) in float32; c0/h0 on entry
  void* output;                   // [L, H]
  void* h_n;                      // [B, H]: h0 on entry (what an empty sequence returns)
  void* c_n;                      // [B, H]: c0 on entry (LSTM), else null
  void* saved_gates;              // [L, G*H] activated gates, or null (inference)
  void* saved_extra;              // [L, H]: c (LSTM) or hh_n (GRU), or null
  int64_t tokens, batch, hidden;  // L, B, H
  int units;                      // hidden units per block: persistent_rnn_units
  bool reverse;
};

// Hidden units per block for a persistent recurrence of `gates` gates on the current
// device, or 0 where it cannot run there (element type without tensor cores, shape, or
// a grid that would not be co-resident).
cudaError_t persistent_rnn_units(ElementType type, int gates, int64_t hidden, int* units);
cudaError_t launch_persistent_lstm_forward(ElementType type, const PersistentRnnArgs& args, cudaStream_t stream);
cudaError_t launch_persistent_gru_forward(ElementType type, const PersistentRnnArgs& args, cudaStream_t stream);

cudaError_t launch_lstm_forward(ElementType type, const LstmForwardArgs& args, cudaStream_t stream);
cudaError_t launch_lstm_backward(ElementType type, const LstmBackwardArgs& args, cudaStream_t stream);
cudaError_t launch_gru_forward(ElementType type, const GruForwardArgs& args, cudaStream_t stream);
cudaError_t launch_gru_backward(ElementType type, const GruBackwardArgs& args, cudaStream_t stream);
cudaError_t launch_rnn_forward(ElementType type, const RnnForwardArgs& args, cudaStream_t stream);
cudaError_t launch_rnn_backward(ElementType type, const RnnBackwardArgs& args, cudaStream_t stream);

}  // namespace cuda
}  // namespace padkern
