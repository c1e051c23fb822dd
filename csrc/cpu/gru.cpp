// CPU kernels of padkern::gru_recurrence / gru_recurrence_backward; same schedule as
// the LSTM (csrc/cpu/lstm.cpp): one GEMM per step on the running sequences,
// then a fused gate loop reading and writing the ragged buffers in place.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "padkern/rnn_cells.h"
#include "padkern/recurrence_checks.h"
#include "reduced_precision.h"
#include "rnn_schedule.h"

namespace padkern {
namespace cpu {
namespace {

// One sequence's step; hidden units are independent, so the loop vectorises.
template <typename scalar_t, bool Save>
PADKERN_VECTOR_CLONES void gru_step_row(const scalar_t* __restrict x, const scalar_t* __restrict projected, const scalar_t* __restrict b_hh,
                  scalar_t* __restrict h, scalar_t* __restrict out, scalar_t* __restrict saved_gates,
                  scalar_t* __restrict saved_hh_n, int64_t hidden) {
#pragma omp simd
  for (int64_t j = 0; j < hidden; ++j) {
    const scalar_t hh_n = projected[2 * hidden + j] + b_hh[2 * hidden + j];
    const GruStep<scalar_t> s =
        gru_forward<scalar_t>(x[j], x[hidden + j], x[2 * hidden + j], projected[j] + b_hh[j],
                              projected[hidden + j] + b_hh[hidden + j], hh_n, h[j]);
    h[j] = s.h;
    out[j] = s.h;
    if (Save) {
      saved_gates[j] = s.r;
      saved_gates[hidden + j] = s.z;
      saved_gates[2 * hidden + j] = s.n;
      saved_hh_n[j] = hh_n;
    }
  }
}

// One sequence's backward step. `dh` enters as the gradient of this step's h and
// leaves as the direct z * h_prev part of the previous step's (the W_hh part is
// accumulated onto it by one GEMM for all running sequences).
template <typename scalar_t>
PADKERN_VECTOR_CLONES void gru_backward_row(const scalar_t* __restrict gates, const scalar_t* __restrict hh_n,
                      const scalar_t* __restrict h_prev, const scalar_t* __restrict grad_out, scalar_t* __restrict dh,
                      scalar_t* __restrict grad_x, scalar_t* __restrict step_grad, int64_t hidden) {
#pragma omp simd
  for (int64_t j = 0; j < hidden; ++j) {
    const GruGrad<scalar_t> g =
        gru_backward<scalar_t>(gates[j], gates[hidden + j], gates[2 * hidden + j], hh_n[j], h_prev[j], dh[j] + grad_out[j]);
    grad_x[j] = step_grad[j] = g.d_r;
    grad_x[hidden + j] = step_grad[hidden + j] = g.d_z;
    grad_x[2 * hidden + j] = g.d_n;
    step_grad[2 * hidden + j] = g.d_hh_n;
    dh[j] = g.dh_prev_direct;
  }
}

template <typename scalar_t>
void gru_forward_kernel(const scalar_t* x, const int64_t* offsets, const at::Tensor& w, const scalar_t* b_hh,
                        const scalar_t* h0, bool reverse, int64_t batch, int64_t hidden, scalar_t* out, scalar_t* h_n,
                        scalar_t* saved_gates, scalar_t* saved_hh_n) {
  const int64_t gates = 3 * hidden;
  const RaggedSchedule schedule = make_schedule(offsets, batch);
  const StepGemm recurrent(w);  // h @ w_hh^T
  at::Tensor h_buffer = at::empty({batch, hidden}, w.options());
  scalar_t *h = h_buffer.data_ptr<scalar_t>();
  gather_rows(h0, schedule.order, hidden, h);

  run_forward_steps<scalar_t>(
      schedule, offsets, reverse, recurrent, h_buffer, hidden,
      [&](int64_t k, int64_t token, const scalar_t* projected) {
        const scalar_t* x_row = x + token * gates;
        if (saved_gates != nullptr) {
          gru_step_row<scalar_t, true>(x_row, projected, b_hh, h + k * hidden, out + token * hidden,
                                       saved_gates + token * gates, saved_hh_n + token * hidden, hidden);
        } else {
          gru_step_row<scalar_t, false>(x_row, projected, b_hh, h + k * hidden, out + token * hidden, nullptr,
                                        nullptr, hidden);
        }
      });
  scatter_rows(h, schedule.order, hidden, h_n);
}

// float32/float64, arguments already checked.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_recurrence_checked(
    const at::Tensor& gates_x, const at::Tensor& offsets, const at::Tensor& w_hh, const at::Tensor& b_hh,
    const at::Tensor& h0, bool reverse, bool save_for_backward) {
  const int64_t hidden = w_hh.size(1), tokens = gates_x.size(0), batch = offsets.size(0) - 1;
  at::Tensor output = at::empty({tokens, hidden}, gates_x.options());
  at::Tensor h_n = at::empty_like(h0, at::MemoryFormat::Contiguous);
  at::Tensor saved_gates = at::empty({save_for_backward ? tokens : 0, 3 * hidden}, gates_x.options());
  at::Tensor saved_hh_n = at::empty({save_for_backward ? tokens : 0, hidden}, gates_x.options());
  const at::Tensor x = gates_x.contiguous(), w = w_hh.contiguous(), b = b_hh.contiguous(), h = h0.contiguous();
  AT_DISPATCH_FLOATING_TYPES(gates_x.scalar_type(), "padkern_gru_recurrence_cpu", [&] {
    gru_forward_kernel<scalar_t>(x.data_ptr<scalar_t>(), offsets.data_ptr<int64_t>(), w,
                                 b.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(), reverse, batch, hidden,
                                 output.data_ptr<scalar_t>(), h_n.data_ptr<scalar_t>(),
                                 save_for_backward ? saved_gates.data_ptr<scalar_t>() : nullptr,
                                 save_for_backward ? saved_hh_n.data_ptr<scalar_t>() : nullptr);
  });
  return {output, h_n, saved_gates, saved_hh_n};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_recurrence_cpu(
    const at::Tensor& gates_x, const at::Tensor& offsets, const at::Tensor& w_hh, const at::Tensor& b_hh,
    const at::Tensor& h0, bool reverse, bool save_for_backward) {
  check_offsets_contents(offsets, check_gru_forward_inputs(gates_x, offsets, w_hh, b_hh, h0).tokens);
  if (is_reduced_float(gates_x)) {
    return run_in_float32(gru_recurrence_checked, gates_x.scalar_type(), gates_x, offsets, w_hh, b_hh, h0, reverse,
                          save_for_backward);
  }
  return gru_recurrence_checked(gates_x, offsets, w_hh, b_hh, h0, reverse, save_for_backward);
}

template <typename scalar_t>
void gru_backward_kernel(const scalar_t* grad_out, const scalar_t* grad_h_n, const scalar_t* saved_gates,
                         const scalar_t* saved_hh_n, const scalar_t* output, const int64_t* offsets, const at::Tensor& w,
                         const scalar_t* h0, bool reverse, int64_t batch, int64_t hidden, scalar_t* grad_gates_x,
                         scalar_t* grad_gates_hh, scalar_t* grad_h0) {
  const int64_t gates = 3 * hidden;
  const RaggedSchedule schedule = make_schedule(offsets, batch);
  const StepGemm recurrent(w.t());  // grad_gates @ w_hh
  at::Tensor dh_buffer = at::empty({batch, hidden}, w.options());
  at::Tensor step_grad_buffer = at::empty({batch, gates}, w.options());
  scalar_t *dh = dh_buffer.data_ptr<scalar_t>(), *step_grad = step_grad_buffer.data_ptr<scalar_t>();
  gather_rows(grad_h_n, schedule.order, hidden, dh);

  run_backward_steps(
      schedule, offsets, reverse, hidden,
      [&](int64_t k, int64_t b, int64_t t, int64_t token) {
        const scalar_t* h_prev =
            t == 0 ? h0 + b * hidden : output + step_token(offsets[b], offsets[b + 1], t - 1, reverse) * hidden;
        scalar_t* step_row = step_grad + k * gates;
        gru_backward_row(saved_gates + token * gates, saved_hh_n + token * hidden, h_prev, grad_out + token * hidden,
                         dh + k * hidden, grad_gates_x + token * gates, step_row, hidden);
        std::copy_n(step_row, gates, grad_gates_hh + token * gates);
      },
      // dh holds the direct z * h_prev path; the W_hh path adds onto it.
      [&](int64_t running) { recurrent.multiply(step_grad_buffer, running, /*accumulate=*/true, dh_buffer); });
  scatter_rows(dh, schedule.order, hidden, grad_h0);
}

// float32/float64, arguments already checked.
std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_recurrence_backward_checked(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& saved_gates,
    const at::Tensor& saved_hh_n, const at::Tensor& output, const at::Tensor& offsets, const at::Tensor& w_hh,
    const at::Tensor& h0, bool reverse) {
  const int64_t hidden = w_hh.size(1), batch = offsets.size(0) - 1;
  at::Tensor grad_gates_x = at::empty({grad_output.size(0), 3 * hidden}, grad_output.options());
  at::Tensor grad_gates_hh = at::empty_like(grad_gates_x);
  at::Tensor grad_h0 = at::empty_like(h0, at::MemoryFormat::Contiguous);
  const at::Tensor go = grad_output.contiguous(), gh = grad_h_n.contiguous(), sg = saved_gates.contiguous();
  const at::Tensor sn = saved_hh_n.contiguous(), out = output.contiguous(), w = w_hh.contiguous(), h = h0.contiguous();
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "padkern_gru_recurrence_backward_cpu", [&] {
    gru_backward_kernel<scalar_t>(go.data_ptr<scalar_t>(), gh.data_ptr<scalar_t>(), sg.data_ptr<scalar_t>(),
                                  sn.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), offsets.data_ptr<int64_t>(),
                                  w, h.data_ptr<scalar_t>(), reverse, batch, hidden,
                                  grad_gates_x.data_ptr<scalar_t>(), grad_gates_hh.data_ptr<scalar_t>(),
                                  grad_h0.data_ptr<scalar_t>());
  });
  return {grad_gates_x, grad_gates_hh, grad_h0};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_recurrence_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& saved_gates,
    const at::Tensor& saved_hh_n, const at::Tensor& output, const at::Tensor& offsets, const at::Tensor& w_hh,
    const at::Tensor& h0, bool reverse) {
  const RecurrenceShape shape =
      check_gru_backward_inputs(grad_output, grad_h_n, saved_gates, saved_hh_n, output, offsets, w_hh, h0);
  check_offsets_contents(offsets, shape.tokens);
  if (is_reduced_float(grad_output)) {
    return run_in_float32(gru_recurrence_backward_checked, grad_output.scalar_type(), grad_output, grad_h_n,
                          saved_gates, saved_hh_n, output, offsets, w_hh, h0, reverse);
  }
  return gru_recurrence_backward_checked(grad_output, grad_h_n, saved_gates, saved_hh_n, output, offsets, w_hh, h0,
                                         reverse);
}

}  // namespace

TORCH_LIBRARY_IMPL(padkern, CPU, m) {
  m.impl("gru_recurrence", &gru_recurrence_cpu);
  m.impl("gru_recurrence_backward", &gru_recurrence_backward_cpu);
}

}  // namespace cpu
}  // namespace padkern
