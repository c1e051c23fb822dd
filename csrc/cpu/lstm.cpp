// CPU kernels of padkern::lstm_recurrence / lstm_recurrence_backward: per step one
// GEMM (csrc/cpu/step_gemm.h) on the running sequences' state, then a fused gate
// loop over them that reads each sequence's precomputed input gates at its own token
// and writes the output row in place. State and product buffers are allocated once per
// call; a step allocates nothing.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "lstm_rows.h"
#include "padkern/recurrence_checks.h"
#include "reduced_precision.h"
#include "rnn_schedule.h"

namespace padkern {
namespace cpu {
namespace {

template <typename scalar_t>
void lstm_forward_kernel(const scalar_t* x, const int64_t* offsets, const at::Tensor& w, const scalar_t* h0,
                         const scalar_t* c0, bool reverse, int64_t batch, int64_t hidden, scalar_t* out, scalar_t* h_n,
                         scalar_t* c_n, scalar_t* saved_gates, scalar_t* saved_cell) {
  const int64_t gates = 4 * hidden;
  const RaggedSchedule schedule = make_schedule(offsets, batch);
  const StepGemm recurrent(w);  // h @ w_hh^T
  at::Tensor h_buffer = at::empty({batch, hidden}, w.options());
  at::Tensor c_buffer = at::empty({batch, hidden}, w.options());
  scalar_t *h = h_buffer.data_ptr<scalar_t>(), *c = c_buffer.data_ptr<scalar_t>();
  gather_rows(h0, schedule.order, hidden, h);
  gather_rows(c0, schedule.order, hidden, c);

  run_forward_steps<scalar_t>(
      schedule, offsets, reverse, recurrent, h_buffer, hidden,
      [&](int64_t k, int64_t token, const scalar_t* projected) {
        const scalar_t* x_row = x + token * gates;
        scalar_t* h_row = h + k * hidden;
        scalar_t* c_row = c + k * hidden;
        if (saved_gates != nullptr) {
          lstm_step_row<scalar_t, true>(x_row, projected, c_row, h_row, out + token * hidden,
                                        saved_gates + token * gates, saved_cell + token * hidden, hidden);
        } else {
          lstm_step_row<scalar_t, false>(x_row, projected, c_row, h_row, out + token * hidden, nullptr, nullptr,
                                         hidden);
        }
      });
  scatter_rows(h, schedule.order, hidden, h_n);
  scatter_rows(c, schedule.order, hidden, c_n);
}

// float32/float64, arguments already checked.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_recurrence_checked(
    const at::Tensor& gates_x, const at::Tensor& offsets, const at::Tensor& w_hh, const at::Tensor& h0,
    const at::Tensor& c0, bool reverse, bool save_for_backward) {
  const int64_t hidden = w_hh.size(1), tokens = gates_x.size(0), batch = offsets.size(0) - 1;
  at::Tensor output = at::empty({tokens, hidden}, gates_x.options());
  // Row-major whatever h0/c0's strides: the kernel writes rows through data pointers.
  at::Tensor h_n = at::empty_like(h0, at::MemoryFormat::Contiguous);
  at::Tensor c_n = at::empty_like(c0, at::MemoryFormat::Contiguous);
  at::Tensor saved_gates = at::empty({save_for_backward ? tokens : 0, 4 * hidden}, gates_x.options());
  at::Tensor saved_cell = at::empty({save_for_backward ? tokens : 0, hidden}, gates_x.options());
  const at::Tensor x = gates_x.contiguous(), w = w_hh.contiguous(), h = h0.contiguous(), c = c0.contiguous();
  AT_DISPATCH_FLOATING_TYPES(gates_x.scalar_type(), "padkern_lstm_recurrence_cpu", [&] {
    lstm_forward_kernel<scalar_t>(x.data_ptr<scalar_t>(), offsets.data_ptr<int64_t>(), w,
                                  h.data_ptr<scalar_t>(), c.data_ptr<scalar_t>(), reverse, batch, hidden,
                                  output.data_ptr<scalar_t>(), h_n.data_ptr<scalar_t>(), c_n.data_ptr<scalar_t>(),
                                  save_for_backward ? saved_gates.data_ptr<scalar_t>() : nullptr,
                                  save_for_backward ? saved_cell.data_ptr<scalar_t>() : nullptr);
  });
  return {output, h_n, c_n, saved_gates, saved_cell};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_recurrence_cpu(
    const at::Tensor& gates_x, const at::Tensor& offsets, const at::Tensor& w_hh, const at::Tensor& h0,
    const at::Tensor& c0, bool reverse, bool save_for_backward) {
  check_offsets_contents(offsets, check_lstm_forward_inputs(gates_x, offsets, w_hh, h0, c0).tokens);
  if (is_reduced_float(gates_x)) {
    return run_in_float32(lstm_recurrence_checked, gates_x.scalar_type(), gates_x, offsets, w_hh, h0, c0, reverse,
                          save_for_backward);
  }
  return lstm_recurrence_checked(gates_x, offsets, w_hh, h0, c0, reverse, save_for_backward);
}

template <typename scalar_t>
void lstm_backward_kernel(const scalar_t* grad_out, const scalar_t* grad_h_n, const scalar_t* grad_c_n,
                          const scalar_t* saved_gates, const scalar_t* saved_cell, const int64_t* offsets,
                          const at::Tensor& w, const scalar_t* c0, bool reverse, int64_t batch, int64_t hidden,
                          scalar_t* grad_gates, scalar_t* grad_h0, scalar_t* grad_c0) {
  const int64_t gates = 4 * hidden;
  const RaggedSchedule schedule = make_schedule(offsets, batch);
  const StepGemm recurrent(w.t());  // grad_gates @ w_hh
  at::Tensor dh_buffer = at::empty({batch, hidden}, w.options());
  at::Tensor dc_buffer = at::empty({batch, hidden}, w.options());
  at::Tensor step_grad_buffer = at::empty({batch, gates}, w.options());
  scalar_t *dh = dh_buffer.data_ptr<scalar_t>(), *dc = dc_buffer.data_ptr<scalar_t>(), *step_grad = step_grad_buffer.data_ptr<scalar_t>();
  gather_rows(grad_h_n, schedule.order, hidden, dh);
  gather_rows(grad_c_n, schedule.order, hidden, dc);

  run_backward_steps(
      schedule, offsets, reverse, hidden,
      [&](int64_t k, int64_t b, int64_t t, int64_t token) {
        const scalar_t* c_prev_row = previous_cell_row(c0, saved_cell, offsets, b, t, reverse, hidden);
        scalar_t* step_row = step_grad + k * gates;
        lstm_backward_row(saved_gates + token * gates, saved_cell + token * hidden, c_prev_row, dh + k * hidden,
                          grad_out + token * hidden, dc + k * hidden, step_row, hidden);
        std::copy_n(step_row, gates, grad_gates + token * gates);
      },
      [&](int64_t running) { recurrent.multiply(step_grad_buffer, running, /*accumulate=*/false, dh_buffer); });
  scatter_rows(dh, schedule.order, hidden, grad_h0);
  scatter_rows(dc, schedule.order, hidden, grad_c0);
}

// float32/float64, arguments already checked.
std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_recurrence_backward_checked(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& grad_c_n, const at::Tensor& saved_gates,
    const at::Tensor& saved_cell, const at::Tensor& offsets, const at::Tensor& w_hh, const at::Tensor& c0, bool reverse) {
  const int64_t hidden = w_hh.size(1), batch = offsets.size(0) - 1;
  at::Tensor grad_gates = at::empty({grad_output.size(0), 4 * hidden}, grad_output.options());
  at::Tensor grad_h0 = at::empty_like(c0, at::MemoryFormat::Contiguous);
  at::Tensor grad_c0 = at::empty_like(c0, at::MemoryFormat::Contiguous);
  const at::Tensor go = grad_output.contiguous(), gh = grad_h_n.contiguous(), gc = grad_c_n.contiguous();
  const at::Tensor sg = saved_gates.contiguous(), sc = saved_cell.contiguous(), w = w_hh.contiguous(), c = c0.contiguous();
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "padkern_lstm_recurrence_backward_cpu", [&] {
    lstm_backward_kernel<scalar_t>(go.data_ptr<scalar_t>(), gh.data_ptr<scalar_t>(), gc.data_ptr<scalar_t>(),
                                   sg.data_ptr<scalar_t>(), sc.data_ptr<scalar_t>(), offsets.data_ptr<int64_t>(),
                                   w, c.data_ptr<scalar_t>(), reverse, batch, hidden,
                                   grad_gates.data_ptr<scalar_t>(), grad_h0.data_ptr<scalar_t>(),
                                   grad_c0.data_ptr<scalar_t>());
  });
  return {grad_gates, grad_h0, grad_c0};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_recurrence_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& grad_c_n, const at::Tensor& saved_gates,
    const at::Tensor& saved_cell, const at::Tensor& offsets, const at::Tensor& w_hh, const at::Tensor& c0, bool reverse) {
  const RecurrenceShape shape =
      check_lstm_backward_inputs(grad_output, grad_h_n, grad_c_n, saved_gates, saved_cell, offsets, w_hh, c0);
  check_offsets_contents(offsets, shape.tokens);
  if (is_reduced_float(grad_output)) {
    return run_in_float32(lstm_recurrence_backward_checked, grad_output.scalar_type(), grad_output, grad_h_n,
                          grad_c_n, saved_gates, saved_cell, offsets, w_hh, c0, reverse);
  }
  return lstm_recurrence_backward_checked(grad_output, grad_h_n, grad_c_n, saved_gates, saved_cell, offsets, w_hh, c0,
                                          reverse);
}

}  // namespace

TORCH_LIBRARY_IMPL(padkern, CPU, m) {
  m.impl("lstm_recurrence", &lstm_recurrence_cpu);
  m.impl("lstm_recurrence_backward", &lstm_recurrence_backward_cpu);
}

}  // namespace cpu
}  // namespace padkern
