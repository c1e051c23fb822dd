// Registers the CUDA kernels of padkern::{lstm,gru,rnn}_recurrence{,_backward}.
// Allocation, layout and dtype mapping here; the kernels (lstm.cu, gru.cu, rnn.cu) see raw pointers.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "element_type.h"
#include "padkern/rnn_kernels.h"
#include "padkern/recurrence_checks.h"
#include "recurrence_path.h"

namespace padkern {
namespace {

at::Tensor saved_or_empty(bool save, int64_t rows, int64_t width, const at::Tensor& like) {
  return at::empty({save ? rows : 0, width}, like.options());
}

void* maybe_ptr(bool save, at::Tensor& tensor) { return save ? tensor.data_ptr() : nullptr; }

// The per-sequence kernels keep `vectors` state vectors of H accumulator elements in each
// block's shared memory: past the device's per-block maximum, a clear error, not the launch's
// "invalid argument". An empty batch launches nothing, so it passes.
void check_state_fits(const char* op, int64_t vectors, int64_t hidden, int64_t batch, const at::Tensor& like) {
  if (batch == 0) return;
  const int64_t element = like.scalar_type() == at::kDouble ? 8 : 4;  // the accumulator's size
  const int64_t limit = at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin;
  TORCH_CHECK_VALUE(vectors * hidden * element <= limit, "padkern.", op, " on CUDA: hidden_size ", hidden, " in ",
                    like.scalar_type(), " needs ", vectors * hidden * element, " bytes of shared memory per sequence (",
                    vectors, " state vectors of hidden_size ", element, "-byte elements); this GPU allows ", limit,
                    " per block, so hidden_size at most ", limit / (vectors * element), " here");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_recurrence_cuda(
    const at::Tensor& gates_x, const at::Tensor& offsets, const at::Tensor& w_hh, const at::Tensor& h0,
    const at::Tensor& c0, bool reverse, bool save_for_backward) {
  const auto [hidden, tokens, batch] = check_lstm_forward_inputs(gates_x, offsets, w_hh, h0, c0);
  const c10::cuda::CUDAGuard guard(gates_x.device());
  const at::Tensor x = gates_x.contiguous(), h = h0.contiguous(), c = c0.contiguous();
  at::Tensor output = at::empty({tokens, hidden}, x.options());
  at::Tensor saved_gates = saved_or_empty(save_for_backward, tokens, 4 * hidden, x);
  at::Tensor saved_cell = saved_or_empty(save_for_backward, tokens, hidden, x);
  if (const PersistentChoice choice = persistent_choice(x, 4, hidden); choice.units > 0) {
    // h_n/c_n start as h0/c0: what a zero-length sequence returns; the others are written.
    at::Tensor h_n = h.clone(), c_n = c.clone();
    const PersistentBuffers buffers = persistent_buffers(offsets, tokens, h, c);
    const at::Tensor w = aligned_weights(w_hh);
    cuda::PersistentRnnArgs args{x.data_ptr(), offsets.data_ptr<int64_t>(), buffers.order.data_ptr<int64_t>(),
                                 buffers.sorted_lengths.data_ptr<int64_t>(), w.data_ptr(), nullptr,
                                 buffers.hidden_ring.data_ptr(), buffers.state.data_ptr<float>(), output.data_ptr(),
                                 h_n.data_ptr(), c_n.data_ptr(), maybe_ptr(save_for_backward, saved_gates),
                                 maybe_ptr(save_for_backward, saved_cell), tokens, batch, hidden, choice.units, reverse};
    const cudaError_t err =
        cuda::launch_persistent_lstm_forward(element_type(x), args, at::cuda::getCurrentCUDAStream());
    if (!persistent_fallback(err, choice)) {
      C10_CUDA_CHECK(err);
      return {output, h_n, c_n, saved_gates, saved_cell};
    }
  }
  check_state_fits("lstm_recurrence", cuda::kLstmStateVectors.forward, hidden, batch, x);
  const at::Tensor w_t = w_hh.t().contiguous();
  at::Tensor h_n = at::empty_like(h), c_n = at::empty_like(c);
  cuda::LstmForwardArgs args{x.data_ptr(), offsets.data_ptr<int64_t>(), w_t.data_ptr(), h.data_ptr(), c.data_ptr(),
                             output.data_ptr(), h_n.data_ptr(), c_n.data_ptr(),
                             maybe_ptr(save_for_backward, saved_gates), maybe_ptr(save_for_backward, saved_cell),
                             tokens, batch, hidden, reverse};
  C10_CUDA_CHECK(cuda::launch_lstm_forward(element_type(x), args, at::cuda::getCurrentCUDAStream()));
  return {output, h_n, c_n, saved_gates, saved_cell};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_recurrence_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& grad_c_n, const at::Tensor& saved_gates,
    const at::Tensor& saved_cell, const at::Tensor& offsets, const at::Tensor& w_hh, const at::Tensor& c0, bool reverse) {
  const auto [hidden, tokens, batch] =
      check_lstm_backward_inputs(grad_output, grad_h_n, grad_c_n, saved_gates, saved_cell, offsets, w_hh, c0);
  const c10::cuda::CUDAGuard guard(grad_output.device());
  check_state_fits("lstm_recurrence_backward", cuda::kLstmStateVectors.backward, hidden, batch, grad_output);
  const at::Tensor go = grad_output.contiguous(), gh = grad_h_n.contiguous(), gc = grad_c_n.contiguous();
  const at::Tensor sg = saved_gates.contiguous(), sc = saved_cell.contiguous(), w = w_hh.contiguous(), c = c0.contiguous();
  at::Tensor grad_gates = at::empty({go.size(0), 4 * hidden}, go.options());
  at::Tensor grad_h0 = at::empty_like(c), grad_c0 = at::empty_like(c);
  cuda::LstmBackwardArgs args{go.data_ptr(), gh.data_ptr(), gc.data_ptr(), sg.data_ptr(), sc.data_ptr(),
                              offsets.data_ptr<int64_t>(), w.data_ptr(), c.data_ptr(), grad_gates.data_ptr(),
                              grad_h0.data_ptr(), grad_c0.data_ptr(), tokens, batch, hidden, reverse};
  C10_CUDA_CHECK(cuda::launch_lstm_backward(element_type(go), args, at::cuda::getCurrentCUDAStream()));
  return {grad_gates, grad_h0, grad_c0};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_recurrence_cuda(
    const at::Tensor& gates_x, const at::Tensor& offsets, const at::Tensor& w_hh, const at::Tensor& b_hh,
    const at::Tensor& h0, bool reverse, bool save_for_backward) {
  const auto [hidden, tokens, batch] = check_gru_forward_inputs(gates_x, offsets, w_hh, b_hh, h0);
  const c10::cuda::CUDAGuard guard(gates_x.device());
  const at::Tensor x = gates_x.contiguous(), bias = b_hh.contiguous(), h = h0.contiguous();
  at::Tensor output = at::empty({tokens, hidden}, x.options());
  at::Tensor saved_gates = saved_or_empty(save_for_backward, tokens, 3 * hidden, x);
  at::Tensor saved_hh_n = saved_or_empty(save_for_backward, tokens, hidden, x);
  if (const PersistentChoice choice = persistent_choice(x, 3, hidden); choice.units > 0) {
    at::Tensor h_n = h.clone();  // what a zero-length sequence returns; the others are written
    const PersistentBuffers buffers = persistent_buffers(offsets, tokens, h, h);
    const at::Tensor w = aligned_weights(w_hh);
    cuda::PersistentRnnArgs args{x.data_ptr(), offsets.data_ptr<int64_t>(), buffers.order.data_ptr<int64_t>(),
                                 buffers.sorted_lengths.data_ptr<int64_t>(), w.data_ptr(), bias.data_ptr(),
                                 buffers.hidden_ring.data_ptr(), buffers.state.data_ptr<float>(), output.data_ptr(),
                                 h_n.data_ptr(), nullptr, maybe_ptr(save_for_backward, saved_gates),
                                 maybe_ptr(save_for_backward, saved_hh_n), tokens, batch, hidden, choice.units, reverse};
    const cudaError_t err = cuda::launch_persistent_gru_forward(element_type(x), args, at::cuda::getCurrentCUDAStream());
    if (!persistent_fallback(err, choice)) {
      C10_CUDA_CHECK(err);
      return {output, h_n, saved_gates, saved_hh_n};
    }
  }
  check_state_fits("gru_recurrence", cuda::kGruStateVectors.forward, hidden, batch, x);
  const at::Tensor w_t = w_hh.t().contiguous();
  at::Tensor h_n = at::empty_like(h);
  cuda::GruForwardArgs args{x.data_ptr(), offsets.data_ptr<int64_t>(), w_t.data_ptr(), bias.data_ptr(), h.data_ptr(),
                            output.data_ptr(), h_n.data_ptr(), maybe_ptr(save_for_backward, saved_gates),
                            maybe_ptr(save_for_backward, saved_hh_n), tokens, batch, hidden, reverse};
  C10_CUDA_CHECK(cuda::launch_gru_forward(element_type(x), args, at::cuda::getCurrentCUDAStream()));
  return {output, h_n, saved_gates, saved_hh_n};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_recurrence_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& saved_gates,
    const at::Tensor& saved_hh_n, const at::Tensor& output, const at::Tensor& offsets, const at::Tensor& w_hh,
    const at::Tensor& h0, bool reverse) {
  const auto [hidden, tokens, batch] =
      check_gru_backward_inputs(grad_output, grad_h_n, saved_gates, saved_hh_n, output, offsets, w_hh, h0);
  const c10::cuda::CUDAGuard guard(grad_output.device());
  check_state_fits("gru_recurrence_backward", cuda::kGruStateVectors.backward, hidden, batch, grad_output);
  const at::Tensor go = grad_output.contiguous(), gh = grad_h_n.contiguous(), sg = saved_gates.contiguous();
  const at::Tensor sn = saved_hh_n.contiguous(), out = output.contiguous(), w = w_hh.contiguous(), h = h0.contiguous();
  at::Tensor grad_gates_x = at::empty({go.size(0), 3 * hidden}, go.options());
  at::Tensor grad_gates_hh = at::empty_like(grad_gates_x);
  at::Tensor grad_h0 = at::empty_like(h);
  cuda::GruBackwardArgs args{go.data_ptr(), gh.data_ptr(), sg.data_ptr(), sn.data_ptr(), out.data_ptr(),
                             offsets.data_ptr<int64_t>(), w.data_ptr(), h.data_ptr(), grad_gates_x.data_ptr(),
                             grad_gates_hh.data_ptr(), grad_h0.data_ptr(), tokens, batch, hidden, reverse};
  C10_CUDA_CHECK(cuda::launch_gru_backward(element_type(go), args, at::cuda::getCurrentCUDAStream()));
  return {grad_gates_x, grad_gates_hh, grad_h0};
}

// The plain RNN runs per sequence only: with one gate there is a quarter of the LSTM's
// recurrent work per step, and its weights stay in shared memory up to H of about 240
// (float32) or 340 (halves) on an H100.
std::tuple<at::Tensor, at::Tensor> rnn_recurrence_cuda(const at::Tensor& gates_x, const at::Tensor& offsets,
                                                       const at::Tensor& w_hh, const at::Tensor& h0,
                                                       int64_t nonlinearity, bool reverse) {
  const auto [hidden, tokens, batch] = check_rnn_forward_inputs(gates_x, offsets, w_hh, h0, nonlinearity);
  const c10::cuda::CUDAGuard guard(gates_x.device());
  check_state_fits("rnn_recurrence", cuda::kRnnStateVectors.forward, hidden, batch, gates_x);
  const at::Tensor x = gates_x.contiguous(), h = h0.contiguous(), w_t = w_hh.t().contiguous();
  at::Tensor output = at::empty({tokens, hidden}, x.options());
  at::Tensor h_n = at::empty_like(h);
  cuda::RnnForwardArgs args{x.data_ptr(), offsets.data_ptr<int64_t>(), w_t.data_ptr(), h.data_ptr(),
                            output.data_ptr(), h_n.data_ptr(), tokens, batch, hidden, reverse,
                            nonlinearity == kRnnRelu};
  C10_CUDA_CHECK(cuda::launch_rnn_forward(element_type(x), args, at::cuda::getCurrentCUDAStream()));
  return {output, h_n};
}

std::tuple<at::Tensor, at::Tensor> rnn_recurrence_backward_cuda(const at::Tensor& grad_output,
                                                                const at::Tensor& grad_h_n, const at::Tensor& output,
                                                                const at::Tensor& offsets, const at::Tensor& w_hh,
                                                                const at::Tensor& h0, int64_t nonlinearity,
                                                                bool reverse) {
  const auto [hidden, tokens, batch] =
      check_rnn_backward_inputs(grad_output, grad_h_n, output, offsets, w_hh, h0, nonlinearity);
  const c10::cuda::CUDAGuard guard(grad_output.device());
  check_state_fits("rnn_recurrence_backward", cuda::kRnnStateVectors.backward, hidden, batch, grad_output);
  const at::Tensor go = grad_output.contiguous(), gh = grad_h_n.contiguous(), out = output.contiguous();
  const at::Tensor w = w_hh.contiguous();
  at::Tensor grad_pre = at::empty({tokens, hidden}, go.options());
  at::Tensor grad_h0 = at::empty_like(h0, at::MemoryFormat::Contiguous);
  cuda::RnnBackwardArgs args{go.data_ptr(), gh.data_ptr(), out.data_ptr(), offsets.data_ptr<int64_t>(),
                             w.data_ptr(), grad_pre.data_ptr(), grad_h0.data_ptr(), tokens, batch, hidden, reverse,
                             nonlinearity == kRnnRelu};
  C10_CUDA_CHECK(cuda::launch_rnn_backward(element_type(go), args, at::cuda::getCurrentCUDAStream()));
  return {grad_pre, grad_h0};
}

}  // namespace

TORCH_LIBRARY_IMPL(padkern, CUDA, m) {
  m.impl("lstm_recurrence", &lstm_recurrence_cuda);
  m.impl("lstm_recurrence_backward", &lstm_recurrence_backward_cuda);
  m.impl("gru_recurrence", &gru_recurrence_cuda);
  m.impl("gru_recurrence_backward", &gru_recurrence_backward_cuda);
  m.impl("rnn_recurrence", &rnn_recurrence_cuda);
  m.impl("rnn_recurrence_backward", &rnn_recurrence_backward_cuda);
}

}  // namespace padkern
