// CPU kernels of padkern::lstm_projected_recurrence and its backward: torch.nn.LSTM's
// projections (proj_size P < H), h = (o * tanh c) w_hr^T. Each step runs two GEMMs on the
// running sequences' rows (csrc/cpu/step_gemm.h): the recurrent product h [P] by w_hh^T
// [P, 4H], then, after the gate loop (lstm_rows.h) has made the unprojected state
// m = o * tanh c [H], the projection m by w_hr^T [H, P]: 4H P + P H multiply-adds a row, where
// the plain kernels, recurring on m with w_hh w_hr [4H, H] (padkern/ops/_projection.py, the
// GPU backends' route), spend 4H H. Backward carries dh [P] and dc [H]: dm = dh w_hr, the gate
// gradients from dm, then dh = dgates w_hh; each token's dh is kept for w_hr's gradient.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <tuple>

#include "lstm_rows.h"
#include "padkern/recurrence_checks.h"
#include "reduced_precision.h"
#include "rnn_schedule.h"

namespace padkern {
namespace cpu {
namespace {

// Saved for backward (null without): the activated gates [L, 4H], the cell [L, H] and the
// unprojected state m [L, H] at each token.
template <typename scalar_t>
struct ProjectedSaved {
  scalar_t *gates, *cell, *unprojected;
};

template <typename scalar_t>
void projected_forward_kernel(const scalar_t* x, const int64_t* offsets, const at::Tensor& w_hh,
                              const at::Tensor& w_hr, const scalar_t* h0, const scalar_t* c0, bool reverse,
                              const ProjectedShape& shape, scalar_t* out, scalar_t* h_n, scalar_t* c_n,
                              ProjectedSaved<scalar_t> saved) {
  const int64_t hidden = shape.hidden, projection = shape.projection, gates = 4 * hidden;
  const RaggedSchedule schedule = make_schedule(offsets, shape.batch);
  const StepGemm recurrent(w_hh);    // h [P] @ w_hh^T -> [4H]
  const StepGemm projected(w_hr);    // m [H] @ w_hr^T -> [P]
  const at::TensorOptions options = w_hh.options();
  // State rows in schedule order: h [B, P], c and m [B, H], the recurrent product [B, 4H].
  const at::Tensor h_buffer = at::empty({shape.batch, projection}, options);
  const at::Tensor m_buffer = at::empty({shape.batch, hidden}, options);
  const at::Tensor c_buffer = at::empty({shape.batch, hidden}, options);
  const at::Tensor product_buffer = at::empty({shape.batch, gates}, options);
  scalar_t *h = h_buffer.data_ptr<scalar_t>(), *m = m_buffer.data_ptr<scalar_t>(), *c = c_buffer.data_ptr<scalar_t>();
  const scalar_t* product = product_buffer.data_ptr<scalar_t>();
  gather_rows(h0, schedule.order, projection, h);
  gather_rows(c0, schedule.order, hidden, c);

  for (int64_t t = 0; t < schedule.steps; ++t) {
    const int64_t running = schedule.active[t];
    recurrent.multiply(h_buffer, running, /*accumulate=*/false, product_buffer);
    for_running_sequences(schedule, offsets, reverse, t, hidden, [&](int64_t k, int64_t, int64_t token) {
      const scalar_t* x_row = x + token * gates;
      const scalar_t* product_row = product + k * gates;
      if (saved.gates != nullptr) {
        lstm_step_row<scalar_t, true>(x_row, product_row, c + k * hidden, m + k * hidden,
                                      saved.unprojected + token * hidden, saved.gates + token * gates,
                                      saved.cell + token * hidden, hidden);
      } else {
        lstm_step_row<scalar_t, false, false>(x_row, product_row, c + k * hidden, m + k * hidden, nullptr, nullptr,
                                              nullptr, hidden);
      }
    });
    projected.multiply(m_buffer, running, /*accumulate=*/false, h_buffer);
    for_running_sequences(schedule, offsets, reverse, t, hidden, [&](int64_t k, int64_t, int64_t token) {
      std::copy_n(h + k * projection, projection, out + token * projection);
    });
  }
  scatter_rows(h, schedule.order, projection, h_n);
  scatter_rows(c, schedule.order, hidden, c_n);
}

// float32/float64, arguments already checked.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> projected_forward_checked(
    const at::Tensor& gates_x, const at::Tensor& offsets, const at::Tensor& w_hh, const at::Tensor& w_hr,
    const at::Tensor& h0, const at::Tensor& c0, bool reverse, bool save_for_backward) {
  const ProjectedShape shape = projected_shape(gates_x, offsets, w_hr);
  const int64_t saved_rows = save_for_backward ? shape.tokens : 0;
  at::Tensor output = at::empty({shape.tokens, shape.projection}, gates_x.options());
  // Row-major whatever h0/c0's strides: the kernel writes rows through data pointers.
  at::Tensor h_n = at::empty_like(h0, at::MemoryFormat::Contiguous);
  at::Tensor c_n = at::empty_like(c0, at::MemoryFormat::Contiguous);
  at::Tensor saved_gates = at::empty({saved_rows, 4 * shape.hidden}, gates_x.options());
  at::Tensor saved_cell = at::empty({saved_rows, shape.hidden}, gates_x.options());
  at::Tensor unprojected = at::empty({saved_rows, shape.hidden}, gates_x.options());
  const at::Tensor x = gates_x.contiguous(), h = h0.contiguous(), c = c0.contiguous();
  AT_DISPATCH_FLOATING_TYPES(gates_x.scalar_type(), "padkern_lstm_projected_recurrence_cpu", [&] {
    const ProjectedSaved<scalar_t> saved =
        save_for_backward ? ProjectedSaved<scalar_t>{saved_gates.data_ptr<scalar_t>(), saved_cell.data_ptr<scalar_t>(),
                                                     unprojected.data_ptr<scalar_t>()}
                          : ProjectedSaved<scalar_t>{nullptr, nullptr, nullptr};
    projected_forward_kernel<scalar_t>(x.data_ptr<scalar_t>(), offsets.data_ptr<int64_t>(), w_hh.contiguous(),
                                       w_hr.contiguous(), h.data_ptr<scalar_t>(), c.data_ptr<scalar_t>(), reverse,
                                       shape, output.data_ptr<scalar_t>(), h_n.data_ptr<scalar_t>(),
                                       c_n.data_ptr<scalar_t>(), saved);
  });
  return {output, h_n, c_n, saved_gates, saved_cell, unprojected};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> projected_forward_cpu(
    const at::Tensor& gates_x, const at::Tensor& offsets, const at::Tensor& w_hh, const at::Tensor& w_hr,
    const at::Tensor& h0, const at::Tensor& c0, bool reverse, bool save_for_backward) {
  check_offsets_contents(offsets, check_lstm_projected_forward_inputs(gates_x, offsets, w_hh, w_hr, h0, c0).tokens);
  if (is_reduced_float(gates_x)) {
    return run_in_float32(projected_forward_checked, gates_x.scalar_type(), gates_x, offsets, w_hh, w_hr, h0, c0,
                          reverse, save_for_backward);
  }
  return projected_forward_checked(gates_x, offsets, w_hh, w_hr, h0, c0, reverse, save_for_backward);
}

// Gradients out of the backward: the gates' [L, 4H], each token's h's [L, P] (its output's
// and the next step's), and the initial states' [B, P] and [B, H].
template <typename scalar_t>
struct ProjectedGrads {
  scalar_t *gates, *hidden, *h0, *c0;
};

template <typename scalar_t>
void projected_backward_kernel(const scalar_t* grad_out, const scalar_t* grad_h_n, const scalar_t* grad_c_n,
                               const scalar_t* saved_gates, const scalar_t* saved_cell, const int64_t* offsets,
                               const at::Tensor& w_hh, const at::Tensor& w_hr, const scalar_t* c0, bool reverse,
                               const ProjectedShape& shape, ProjectedGrads<scalar_t> grads) {
  const int64_t hidden = shape.hidden, projection = shape.projection, gates = 4 * hidden;
  const RaggedSchedule schedule = make_schedule(offsets, shape.batch);
  const StepGemm unprojection(w_hr.t());  // dh [P] @ w_hr -> dm [H]
  const StepGemm recurrent(w_hh.t());     // dgates [4H] @ w_hh -> dh [P]
  const at::TensorOptions options = w_hh.options();
  // In schedule order: dh carried from the step after [B, P] (rows not yet started keep
  // grad_h_n), the step's total dh [B, P], dm [B, H], dc [B, H], the step's gate gradients [B, 4H].
  const at::Tensor carry_buffer = at::empty({shape.batch, projection}, options);
  const at::Tensor dh_buffer = at::empty({shape.batch, projection}, options);
  const at::Tensor dm_buffer = at::empty({shape.batch, hidden}, options);
  const at::Tensor dc_buffer = at::empty({shape.batch, hidden}, options);
  const at::Tensor step_grad_buffer = at::empty({shape.batch, gates}, options);
  scalar_t *carry = carry_buffer.data_ptr<scalar_t>(), *dh = dh_buffer.data_ptr<scalar_t>();
  scalar_t *dm = dm_buffer.data_ptr<scalar_t>(), *dc = dc_buffer.data_ptr<scalar_t>();
  scalar_t* step_grad = step_grad_buffer.data_ptr<scalar_t>();
  gather_rows(grad_h_n, schedule.order, projection, carry);
  gather_rows(grad_c_n, schedule.order, hidden, dc);

  for (int64_t t = schedule.steps - 1; t >= 0; --t) {
    const int64_t running = schedule.active[t];
    for_running_sequences(schedule, offsets, reverse, t, hidden, [&](int64_t k, int64_t, int64_t token) {
      scalar_t* dh_row = dh + k * projection;
      const scalar_t* carry_row = carry + k * projection;
      const scalar_t* grad_row = grad_out + token * projection;
      for (int64_t j = 0; j < projection; ++j) dh_row[j] = grad_row[j] + carry_row[j];
      std::copy_n(dh_row, projection, grads.hidden + token * projection);
    });
    unprojection.multiply(dh_buffer, running, /*accumulate=*/false, dm_buffer);
    for_running_sequences(schedule, offsets, reverse, t, hidden, [&](int64_t k, int64_t b, int64_t token) {
      const scalar_t* c_prev_row = previous_cell_row(c0, saved_cell, offsets, b, t, reverse, hidden);
      scalar_t* step_row = step_grad + k * gates;
      lstm_backward_row<scalar_t, false>(saved_gates + token * gates, saved_cell + token * hidden, c_prev_row,
                                         dm + k * hidden, nullptr, dc + k * hidden, step_row, hidden);
      std::copy_n(step_row, gates, grads.gates + token * gates);
    });
    recurrent.multiply(step_grad_buffer, running, /*accumulate=*/false, carry_buffer);
  }
  scatter_rows(carry, schedule.order, projection, grads.h0);
  scatter_rows(dc, schedule.order, hidden, grads.c0);
}

// float32/float64, arguments already checked.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> projected_backward_checked(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& grad_c_n, const at::Tensor& saved_gates,
    const at::Tensor& saved_cell, const at::Tensor& offsets, const at::Tensor& w_hh, const at::Tensor& w_hr,
    const at::Tensor& c0, bool reverse) {
  const ProjectedShape shape = projected_shape(grad_output, offsets, w_hr);
  at::Tensor grad_gates = at::empty({shape.tokens, 4 * shape.hidden}, grad_output.options());
  at::Tensor grad_hidden = at::empty({shape.tokens, shape.projection}, grad_output.options());
  at::Tensor grad_h0 = at::empty({shape.batch, shape.projection}, grad_output.options());
  at::Tensor grad_c0 = at::empty_like(c0, at::MemoryFormat::Contiguous);
  const at::Tensor go = grad_output.contiguous(), gh = grad_h_n.contiguous(), gc = grad_c_n.contiguous();
  const at::Tensor sg = saved_gates.contiguous(), sc = saved_cell.contiguous(), c = c0.contiguous();
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "padkern_lstm_projected_recurrence_backward_cpu", [&] {
    projected_backward_kernel<scalar_t>(
        go.data_ptr<scalar_t>(), gh.data_ptr<scalar_t>(), gc.data_ptr<scalar_t>(), sg.data_ptr<scalar_t>(),
        sc.data_ptr<scalar_t>(), offsets.data_ptr<int64_t>(), w_hh.contiguous(), w_hr.contiguous(),
        c.data_ptr<scalar_t>(), reverse, shape,
        {grad_gates.data_ptr<scalar_t>(), grad_hidden.data_ptr<scalar_t>(), grad_h0.data_ptr<scalar_t>(),
         grad_c0.data_ptr<scalar_t>()});
  });
  return {grad_gates, grad_hidden, grad_h0, grad_c0};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> projected_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& grad_c_n, const at::Tensor& saved_gates,
    const at::Tensor& saved_cell, const at::Tensor& offsets, const at::Tensor& w_hh, const at::Tensor& w_hr,
    const at::Tensor& c0, bool reverse) {
  const ProjectedShape shape = check_lstm_projected_backward_inputs(grad_output, grad_h_n, grad_c_n, saved_gates,
                                                                    saved_cell, offsets, w_hh, w_hr, c0);
  check_offsets_contents(offsets, shape.tokens);
  if (is_reduced_float(grad_output)) {
    return run_in_float32(projected_backward_checked, grad_output.scalar_type(), grad_output, grad_h_n, grad_c_n,
                          saved_gates, saved_cell, offsets, w_hh, w_hr, c0, reverse);
  }
  return projected_backward_checked(grad_output, grad_h_n, grad_c_n, saved_gates, saved_cell, offsets, w_hh, w_hr, c0,
                                    reverse);
}

}  // namespace

TORCH_LIBRARY_IMPL(padkern, CPU, m) {
  m.impl("lstm_projected_recurrence", &projected_forward_cpu);
  m.impl("lstm_projected_recurrence_backward", &projected_backward_cpu);
}

}  // namespace cpu
}  // namespace padkern
