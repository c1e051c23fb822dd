// Argument checks of the recurrence ops, one function per op, shared by the CPU and
// CUDA bindings. The bindings copy their operands to contiguous buffers themselves, so
// shapes, dtypes, devices and the offsets' layout are what needs checking here; the CPU
// bindings also check the offsets' contents (O(B), see check_offsets_contents).
#pragma once
#include "padkern/rnn_cells.h"
#include "padkern/tensor_checks.h"

namespace padkern {

struct RecurrenceShape {
  int64_t hidden, tokens, batch;
};

inline RecurrenceShape recurrence_shape(const at::Tensor& rows, const at::Tensor& offsets, const at::Tensor& w_hh,
                                        int64_t gate_count) {
  check_offsets_layout(offsets, rows.device());
  return {recurrent_hidden_size(w_hh, gate_count), rows.size(0), offsets.size(0) - 1};
}

inline RecurrenceShape check_lstm_forward_inputs(const at::Tensor& gates_x, const at::Tensor& offsets,
                                                 const at::Tensor& w_hh, const at::Tensor& h0, const at::Tensor& c0) {
  const RecurrenceShape s = recurrence_shape(gates_x, offsets, w_hh, 4);
  check_recurrence_inputs(gates_x, {{gates_x, "gates_x", s.tokens, 4 * s.hidden}, {w_hh, "w_hh", 4 * s.hidden, s.hidden},
                                    {h0, "h0", s.batch, s.hidden}, {c0, "c0", s.batch, s.hidden}});
  return s;
}

inline RecurrenceShape check_lstm_backward_inputs(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                                                  const at::Tensor& grad_c_n, const at::Tensor& saved_gates,
                                                  const at::Tensor& saved_cell, const at::Tensor& offsets,
                                                  const at::Tensor& w_hh, const at::Tensor& c0) {
  const RecurrenceShape s = recurrence_shape(grad_output, offsets, w_hh, 4);
  check_recurrence_inputs(grad_output, {{grad_output, "grad_output", s.tokens, s.hidden},
                                        {grad_h_n, "grad_h_n", s.batch, s.hidden},
                                        {grad_c_n, "grad_c_n", s.batch, s.hidden},
                                        {saved_gates, "gates", s.tokens, 4 * s.hidden},
                                        {saved_cell, "cell", s.tokens, s.hidden},
                                        {w_hh, "w_hh", 4 * s.hidden, s.hidden},
                                        {c0, "c0", s.batch, s.hidden}});
  return s;
}

// An LSTM with projections (w_hr [P, H]): w_hh [4H, P], h0 and the output rows [., P]; P = projection.
struct ProjectedShape {
  int64_t hidden, projection, tokens, batch;
};

inline ProjectedShape projected_shape(const at::Tensor& rows, const at::Tensor& offsets, const at::Tensor& w_hr) {
  check_offsets_layout(offsets, rows.device());
  TORCH_CHECK(w_hr.dim() == 2 && w_hr.size(0) >= 1, "padkern: w_hr must be [P, H] with P >= 1, got ", w_hr.sizes());
  return {w_hr.size(1), w_hr.size(0), rows.size(0), offsets.size(0) - 1};
}

inline ProjectedShape check_lstm_projected_forward_inputs(const at::Tensor& gates_x, const at::Tensor& offsets,
                                                          const at::Tensor& w_hh, const at::Tensor& w_hr,
                                                          const at::Tensor& h0, const at::Tensor& c0) {
  const ProjectedShape s = projected_shape(gates_x, offsets, w_hr);
  check_recurrence_inputs(gates_x, {{gates_x, "gates_x", s.tokens, 4 * s.hidden},
                                    {w_hh, "w_hh", 4 * s.hidden, s.projection},
                                    {w_hr, "w_hr", s.projection, s.hidden},
                                    {h0, "h0", s.batch, s.projection},
                                    {c0, "c0", s.batch, s.hidden}});
  return s;
}

inline ProjectedShape check_lstm_projected_backward_inputs(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                                                           const at::Tensor& grad_c_n, const at::Tensor& saved_gates,
                                                           const at::Tensor& saved_cell, const at::Tensor& offsets,
                                                           const at::Tensor& w_hh, const at::Tensor& w_hr,
                                                           const at::Tensor& c0) {
  const ProjectedShape s = projected_shape(grad_output, offsets, w_hr);
  check_recurrence_inputs(grad_output, {{grad_output, "grad_output", s.tokens, s.projection},
                                        {grad_h_n, "grad_h_n", s.batch, s.projection},
                                        {grad_c_n, "grad_c_n", s.batch, s.hidden},
                                        {saved_gates, "gates", s.tokens, 4 * s.hidden},
                                        {saved_cell, "cell", s.tokens, s.hidden},
                                        {w_hh, "w_hh", 4 * s.hidden, s.projection},
                                        {w_hr, "w_hr", s.projection, s.hidden},
                                        {c0, "c0", s.batch, s.hidden}});
  return s;
}

inline RecurrenceShape check_gru_forward_inputs(const at::Tensor& gates_x, const at::Tensor& offsets,
                                                const at::Tensor& w_hh, const at::Tensor& b_hh, const at::Tensor& h0) {
  const RecurrenceShape s = recurrence_shape(gates_x, offsets, w_hh, 3);
  check_recurrence_inputs(gates_x, {{gates_x, "gates_x", s.tokens, 3 * s.hidden}, {w_hh, "w_hh", 3 * s.hidden, s.hidden},
                                    {h0, "h0", s.batch, s.hidden}});
  check_same_kind(b_hh, gates_x, "b_hh");
  check_shape(b_hh, {3 * s.hidden}, "b_hh");
  return s;
}

inline RecurrenceShape check_gru_backward_inputs(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                                                 const at::Tensor& saved_gates, const at::Tensor& saved_hh_n,
                                                 const at::Tensor& output, const at::Tensor& offsets,
                                                 const at::Tensor& w_hh, const at::Tensor& h0) {
  const RecurrenceShape s = recurrence_shape(grad_output, offsets, w_hh, 3);
  check_recurrence_inputs(grad_output, {{grad_output, "grad_output", s.tokens, s.hidden},
                                        {grad_h_n, "grad_h_n", s.batch, s.hidden},
                                        {saved_gates, "gates", s.tokens, 3 * s.hidden},
                                        {saved_hh_n, "hh_n", s.tokens, s.hidden},
                                        {output, "output", s.tokens, s.hidden},
                                        {w_hh, "w_hh", 3 * s.hidden, s.hidden},
                                        {h0, "h0", s.batch, s.hidden}});
  return s;
}

inline void check_nonlinearity(int64_t nonlinearity) {
  TORCH_CHECK(nonlinearity == kRnnTanh || nonlinearity == kRnnRelu, "padkern: nonlinearity must be 0 (tanh) or 1 (relu), got ",
              nonlinearity);
}

inline RecurrenceShape check_rnn_forward_inputs(const at::Tensor& gates_x, const at::Tensor& offsets,
                                                const at::Tensor& w_hh, const at::Tensor& h0, int64_t nonlinearity) {
  check_nonlinearity(nonlinearity);
  const RecurrenceShape s = recurrence_shape(gates_x, offsets, w_hh, 1);
  check_recurrence_inputs(gates_x, {{gates_x, "gates_x", s.tokens, s.hidden}, {w_hh, "w_hh", s.hidden, s.hidden},
                                    {h0, "h0", s.batch, s.hidden}});
  return s;
}

inline RecurrenceShape check_rnn_backward_inputs(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                                                 const at::Tensor& output, const at::Tensor& offsets,
                                                 const at::Tensor& w_hh, const at::Tensor& h0, int64_t nonlinearity) {
  check_nonlinearity(nonlinearity);
  const RecurrenceShape s = recurrence_shape(grad_output, offsets, w_hh, 1);
  check_recurrence_inputs(grad_output, {{grad_output, "grad_output", s.tokens, s.hidden},
                                        {grad_h_n, "grad_h_n", s.batch, s.hidden},
                                        {output, "output", s.tokens, s.hidden},
                                        {w_hh, "w_hh", s.hidden, s.hidden},
                                        {h0, "h0", s.batch, s.hidden}});
  return s;
}

}  // namespace padkern
