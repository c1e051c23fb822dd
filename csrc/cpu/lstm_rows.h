// The CPU LSTM's per-sequence gate loops, shared by the plain recurrence (lstm.cpp) and the
// one with projections (lstm_projected.cpp). Hidden units are independent, so each loop
// vectorises (the gate maths has no libm calls on the host, see rnn_cells.h).
#pragma once
#include <cstdint>

#include "padkern/ragged_layout.h"
#include "padkern/rnn_cells.h"
#include "padkern/vector_clones.h"

namespace padkern {
namespace cpu {

// One sequence's step: c and h updated in place from the input gates x [4H] and the recurrent
// product [4H]; with WriteOut, h also into the output row `out`; with Save, the activated gates
// [4H] and the cell [H] for backward.
template <typename scalar_t, bool Save, bool WriteOut = true>
PADKERN_VECTOR_CLONES void lstm_step_row(const scalar_t* __restrict x, const scalar_t* __restrict projected,
                                         scalar_t* __restrict c, scalar_t* __restrict h, scalar_t* __restrict out,
                                         scalar_t* __restrict saved_gates, scalar_t* __restrict saved_cell,
                                         int64_t hidden) {
#pragma omp simd
  for (int64_t j = 0; j < hidden; ++j) {
    const LstmStep<scalar_t> s = lstm_forward<scalar_t>(
        x[j] + projected[j], x[hidden + j] + projected[hidden + j], x[2 * hidden + j] + projected[2 * hidden + j],
        x[3 * hidden + j] + projected[3 * hidden + j], c[j]);
    c[j] = s.c;
    h[j] = s.h;
    if constexpr (WriteOut) out[j] = s.h;
    if constexpr (Save) {
      saved_gates[j] = s.gates.i;
      saved_gates[hidden + j] = s.gates.f;
      saved_gates[2 * hidden + j] = s.gates.g;
      saved_gates[3 * hidden + j] = s.gates.o;
      saved_cell[j] = s.c;
    }
  }
}

// The cell state sequence b's step t started from: c0's row at its first step, else the cell its
// previous step saved (at its previous token: one before it, or one after it in reverse).
template <typename scalar_t>
const scalar_t* previous_cell_row(const scalar_t* c0, const scalar_t* saved_cell, const int64_t* offsets, int64_t b,
                                  int64_t t, bool reverse, int64_t hidden) {
  return t == 0 ? c0 + b * hidden : saved_cell + step_token(offsets[b], offsets[b + 1], t - 1, reverse) * hidden;
}

// One sequence's backward step: gate gradients into `step_grad`, dc carried in place. The
// gradient reaching h is dh + grad_out, or dh alone without AddOutputGrad (grad_out unread).
template <typename scalar_t, bool AddOutputGrad = true>
PADKERN_VECTOR_CLONES void lstm_backward_row(const scalar_t* __restrict gates, const scalar_t* __restrict cell,
                                             const scalar_t* __restrict c_prev, const scalar_t* __restrict dh,
                                             const scalar_t* __restrict grad_out, scalar_t* __restrict dc,
                                             scalar_t* __restrict step_grad, int64_t hidden) {
#pragma omp simd
  for (int64_t j = 0; j < hidden; ++j) {
    const LstmGates<scalar_t> activated{gates[j], gates[hidden + j], gates[2 * hidden + j], gates[3 * hidden + j]};
    scalar_t dh_total = dh[j];
    if constexpr (AddOutputGrad) dh_total += grad_out[j];
    const LstmGrad<scalar_t> g = lstm_backward<scalar_t>(activated, cell[j], c_prev[j], dh_total, dc[j]);
    step_grad[j] = g.d_i;
    step_grad[hidden + j] = g.d_f;
    step_grad[2 * hidden + j] = g.d_g;
    step_grad[3 * hidden + j] = g.d_o;
    dc[j] = g.dc_prev;
  }
}

}  // namespace cpu
}  // namespace padkern
