// CPU kernels of padkern::rnn_recurrence / rnn_recurrence_backward (the Elman cell of
// torch.nn.RNN); same schedule as the LSTM (csrc/cpu/lstm.cpp): one GEMM per step on
// the running sequences, then a fused loop reading and writing the ragged buffers in place.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <tuple>

#include "padkern/recurrence_checks.h"
#include "padkern/rnn_cells.h"
#include "reduced_precision.h"
#include "rnn_schedule.h"

namespace padkern {
namespace cpu {
namespace {

// One sequence's step; hidden units are independent, so the loop vectorises.
template <typename scalar_t, bool Relu>
PADKERN_VECTOR_CLONES void rnn_step_row(const scalar_t* __restrict x, const scalar_t* __restrict projected,
                                        scalar_t* __restrict h, scalar_t* __restrict out, int64_t hidden) {
#pragma omp simd
  for (int64_t j = 0; j < hidden; ++j) {
    const scalar_t value = rnn_forward<scalar_t>(x[j] + projected[j], Relu);
    h[j] = value;
    out[j] = value;
  }
}

// One sequence's backward step: the pre-activation's gradient from the carried dh and
// the step's output gradient; the W_hh path back to the previous step is one GEMM for
// all running sequences.
template <typename scalar_t, bool Relu>
PADKERN_VECTOR_CLONES void rnn_backward_row(const scalar_t* __restrict h, const scalar_t* __restrict dh,
                                            const scalar_t* __restrict grad_out, scalar_t* __restrict step_grad,
                                            int64_t hidden) {
#pragma omp simd
  for (int64_t j = 0; j < hidden; ++j) step_grad[j] = rnn_backward<scalar_t>(h[j], dh[j] + grad_out[j], Relu);
}

template <typename scalar_t, bool Relu>
void rnn_forward_kernel(const scalar_t* x, const int64_t* offsets, const at::Tensor& w, const scalar_t* h0,
                        bool reverse, int64_t batch, int64_t hidden, scalar_t* out, scalar_t* h_n) {
  const RaggedSchedule schedule = make_schedule(offsets, batch);
  const StepGemm recurrent(w);  // h @ w_hh^T
  at::Tensor h_buffer = at::empty({batch, hidden}, w.options());
  scalar_t* h = h_buffer.data_ptr<scalar_t>();
  gather_rows(h0, schedule.order, hidden, h);

  run_forward_steps<scalar_t>(schedule, offsets, reverse, recurrent, h_buffer, hidden,
                              [&](int64_t k, int64_t token, const scalar_t* projected) {
                                rnn_step_row<scalar_t, Relu>(x + token * hidden, projected, h + k * hidden,
                                                             out + token * hidden, hidden);
                              });
  scatter_rows(h, schedule.order, hidden, h_n);
}

// float32/float64, arguments already checked.
std::tuple<at::Tensor, at::Tensor> rnn_recurrence_checked(const at::Tensor& gates_x, const at::Tensor& offsets,
                                                          const at::Tensor& w_hh, const at::Tensor& h0,
                                                          int64_t nonlinearity, bool reverse) {
  const int64_t hidden = w_hh.size(1), tokens = gates_x.size(0), batch = offsets.size(0) - 1;
  at::Tensor output = at::empty({tokens, hidden}, gates_x.options());
  at::Tensor h_n = at::empty_like(h0, at::MemoryFormat::Contiguous);
  const at::Tensor x = gates_x.contiguous(), w = w_hh.contiguous(), h = h0.contiguous();
  AT_DISPATCH_FLOATING_TYPES(gates_x.scalar_type(), "padkern_rnn_recurrence_cpu", [&] {
    auto run = nonlinearity == kRnnRelu ? rnn_forward_kernel<scalar_t, true> : rnn_forward_kernel<scalar_t, false>;
    run(x.data_ptr<scalar_t>(), offsets.data_ptr<int64_t>(), w, h.data_ptr<scalar_t>(), reverse, batch, hidden,
        output.data_ptr<scalar_t>(), h_n.data_ptr<scalar_t>());
  });
  return {output, h_n};
}

std::tuple<at::Tensor, at::Tensor> rnn_recurrence_cpu(const at::Tensor& gates_x, const at::Tensor& offsets,
                                                      const at::Tensor& w_hh, const at::Tensor& h0,
                                                      int64_t nonlinearity, bool reverse) {
  check_offsets_contents(offsets, check_rnn_forward_inputs(gates_x, offsets, w_hh, h0, nonlinearity).tokens);
  if (is_reduced_float(gates_x)) {
    return run_in_float32(rnn_recurrence_checked, gates_x.scalar_type(), gates_x, offsets, w_hh, h0, nonlinearity,
                          reverse);
  }
  return rnn_recurrence_checked(gates_x, offsets, w_hh, h0, nonlinearity, reverse);
}

template <typename scalar_t, bool Relu>
void rnn_backward_kernel(const scalar_t* grad_out, const scalar_t* grad_h_n, const scalar_t* output,
                         const int64_t* offsets, const at::Tensor& w, bool reverse, int64_t batch, int64_t hidden,
                         scalar_t* grad_pre, scalar_t* grad_h0) {
  const RaggedSchedule schedule = make_schedule(offsets, batch);
  const StepGemm recurrent(w.t());  // step_grad @ w_hh
  at::Tensor dh_buffer = at::empty({batch, hidden}, w.options());
  at::Tensor step_grad_buffer = at::empty({batch, hidden}, w.options());
  scalar_t *dh = dh_buffer.data_ptr<scalar_t>(), *step_grad = step_grad_buffer.data_ptr<scalar_t>();
  gather_rows(grad_h_n, schedule.order, hidden, dh);

  run_backward_steps(
      schedule, offsets, reverse, hidden,
      [&](int64_t k, int64_t, int64_t, int64_t token) {
        scalar_t* step_row = step_grad + k * hidden;
        rnn_backward_row<scalar_t, Relu>(output + token * hidden, dh + k * hidden, grad_out + token * hidden, step_row,
                                         hidden);
        std::copy_n(step_row, hidden, grad_pre + token * hidden);
      },
      [&](int64_t running) { recurrent.multiply(step_grad_buffer, running, /*accumulate=*/false, dh_buffer); });
  scatter_rows(dh, schedule.order, hidden, grad_h0);
}

// float32/float64, arguments already checked.
std::tuple<at::Tensor, at::Tensor> rnn_recurrence_backward_checked(const at::Tensor& grad_output,
                                                                   const at::Tensor& grad_h_n, const at::Tensor& output,
                                                                   const at::Tensor& offsets, const at::Tensor& w_hh,
                                                                   const at::Tensor& h0, int64_t nonlinearity,
                                                                   bool reverse) {
  const int64_t hidden = w_hh.size(1), batch = offsets.size(0) - 1;
  at::Tensor grad_pre = at::empty({grad_output.size(0), hidden}, grad_output.options());
  at::Tensor grad_h0 = at::empty_like(h0, at::MemoryFormat::Contiguous);
  const at::Tensor go = grad_output.contiguous(), gh = grad_h_n.contiguous(), out = output.contiguous();
  const at::Tensor w = w_hh.contiguous();
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "padkern_rnn_recurrence_backward_cpu", [&] {
    auto run = nonlinearity == kRnnRelu ? rnn_backward_kernel<scalar_t, true> : rnn_backward_kernel<scalar_t, false>;
    run(go.data_ptr<scalar_t>(), gh.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), offsets.data_ptr<int64_t>(), w,
        reverse, batch, hidden, grad_pre.data_ptr<scalar_t>(), grad_h0.data_ptr<scalar_t>());
  });
  return {grad_pre, grad_h0};
}

std::tuple<at::Tensor, at::Tensor> rnn_recurrence_backward_cpu(const at::Tensor& grad_output,
                                                               const at::Tensor& grad_h_n, const at::Tensor& output,
                                                               const at::Tensor& offsets, const at::Tensor& w_hh,
                                                               const at::Tensor& h0, int64_t nonlinearity,
                                                               bool reverse) {
  const RecurrenceShape shape =
      check_rnn_backward_inputs(grad_output, grad_h_n, output, offsets, w_hh, h0, nonlinearity);
  check_offsets_contents(offsets, shape.tokens);
  if (is_reduced_float(grad_output)) {
    return run_in_float32(rnn_recurrence_backward_checked, grad_output.scalar_type(), grad_output, grad_h_n, output,
                          offsets, w_hh, h0, nonlinearity, reverse);
  }
  return rnn_recurrence_backward_checked(grad_output, grad_h_n, output, offsets, w_hh, h0, nonlinearity, reverse);
}

}  // namespace

TORCH_LIBRARY_IMPL(padkern, CPU, m) {
  m.impl("rnn_recurrence", &rnn_recurrence_cpu);
  m.impl("rnn_recurrence_backward", &rnn_recurrence_backward_cpu);
}

}  // namespace cpu
}  // namespace padkern
