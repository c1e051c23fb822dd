// CUDA LSTM recurrence over a ragged batch, forward and backward through time.
// One block per sequence (see recurrence_launch.cuh); gate maths from rnn_cells.h,
// shared with the CPU kernels.
#include "padkern/ragged_layout.h"
#include "padkern/rnn_cells.h"
#include "recurrence_launch.cuh"

namespace padkern {
namespace cuda {
namespace {

// Shared memory: h, h_next, c [H] (A), then w_hh^T [H, 4H] (T) when it fits.
template <typename T, typename A, bool WeightsShared>
__global__ void __launch_bounds__(kMaxThreads) lstm_forward_kernel(LstmForwardArgs args) {
  extern __shared__ __align__(16) unsigned char shared_raw[];
  const int64_t hidden = args.hidden, gates = 4 * hidden, b = blockIdx.x;
  A* h = reinterpret_cast<A*>(shared_raw);
  A* h_next = h + hidden;
  A* c = h_next + hidden;
  const T* w = stage_weights<WeightsShared>(static_cast<const T*>(args.w_hh_t),
                                           reinterpret_cast<T*>(c + hidden), hidden * gates);
  const T* h0 = static_cast<const T*>(args.h0) + b * hidden;
  const T* c0 = static_cast<const T*>(args.c0) + b * hidden;
  for (int64_t j = threadIdx.x; j < hidden; j += blockDim.x) {
    h[j] = to_acc<A>(h0[j]);
    c[j] = to_acc<A>(c0[j]);
  }
  __syncthreads();

  const T* gates_x = static_cast<const T*>(args.gates_x);
  T* output = static_cast<T*>(args.output);
  T* saved_gates = static_cast<T*>(args.saved_gates);
  T* saved_cell = static_cast<T*>(args.saved_cell);
  const SequenceSpan span = sequence_span(args.offsets, b, args.tokens);
  const int64_t bos = span.bos, eos = span.eos;
  for (int64_t t = 0; t < eos - bos; ++t) {
    const int64_t token = step_token(bos, eos, t, args.reverse);
    const T* x = gates_x + token * gates;
    for (int64_t j = threadIdx.x; j < hidden; j += blockDim.x) {
      A pre_i = to_acc<A>(x[j]), pre_f = to_acc<A>(x[hidden + j]);
      A pre_g = to_acc<A>(x[2 * hidden + j]), pre_o = to_acc<A>(x[3 * hidden + j]);
      // Column j of each gate block of w_hh^T: consecutive threads read consecutive words.
      const T* w_j = w + j;
      for (int64_t k = 0; k < hidden; ++k) {
        const A h_k = h[k];
        const T* w_k = w_j + k * gates;
        pre_i += h_k * to_acc<A>(w_k[0]);
        pre_f += h_k * to_acc<A>(w_k[hidden]);
        pre_g += h_k * to_acc<A>(w_k[2 * hidden]);
        pre_o += h_k * to_acc<A>(w_k[3 * hidden]);
      }
      const LstmStep<A> s = lstm_forward<A>(pre_i, pre_f, pre_g, pre_o, c[j]);
      c[j] = s.c;
      h_next[j] = s.h;
      output[token * hidden + j] = from_acc<T>(s.h);
      if (saved_gates != nullptr) {
        T* g = saved_gates + token * gates;
        g[j] = from_acc<T>(s.gates.i);
        g[hidden + j] = from_acc<T>(s.gates.f);
        g[2 * hidden + j] = from_acc<T>(s.gates.g);
        g[3 * hidden + j] = from_acc<T>(s.gates.o);
        saved_cell[token * hidden + j] = from_acc<T>(s.c);
      }
    }
    __syncthreads();  // h_next complete; every read of h done
    A* swap = h;
    h = h_next;
    h_next = swap;
  }
  T* h_n = static_cast<T*>(args.h_n) + b * hidden;
  T* c_n = static_cast<T*>(args.c_n) + b * hidden;
  for (int64_t j = threadIdx.x; j < hidden; j += blockDim.x) {
    h_n[j] = from_acc<T>(h[j]);
    c_n[j] = from_acc<T>(c[j]);
  }
}

// Shared memory: dh, dc [H] and the step's gate gradients [4H] (A), then w_hh [4H, H] (T) when it fits.
template <typename T, typename A, bool WeightsShared>
__global__ void __launch_bounds__(kMaxThreads) lstm_backward_kernel(LstmBackwardArgs args) {
  extern __shared__ __align__(16) unsigned char shared_raw[];
  const int64_t hidden = args.hidden, gates = 4 * hidden, b = blockIdx.x;
  A* dh = reinterpret_cast<A*>(shared_raw);
  A* dc = dh + hidden;
  A* step_grad = dc + hidden;
  const T* w = stage_weights<WeightsShared>(static_cast<const T*>(args.w_hh),
                                           reinterpret_cast<T*>(step_grad + gates), hidden * gates);
  for (int64_t j = threadIdx.x; j < hidden; j += blockDim.x) {
    dh[j] = to_acc<A>(static_cast<const T*>(args.grad_h_n)[b * hidden + j]);
    dc[j] = to_acc<A>(static_cast<const T*>(args.grad_c_n)[b * hidden + j]);
  }
  __syncthreads();

  const T* grad_output = static_cast<const T*>(args.grad_output);
  const T* saved_gates = static_cast<const T*>(args.saved_gates);
  const T* saved_cell = static_cast<const T*>(args.saved_cell);
  T* grad_gates = static_cast<T*>(args.grad_gates);
  const SequenceSpan span = sequence_span(args.offsets, b, args.tokens);
  const int64_t bos = span.bos, eos = span.eos;
  for (int64_t t = eos - bos - 1; t >= 0; --t) {
    const int64_t token = step_token(bos, eos, t, args.reverse);
    const T* c_prev = t == 0 ? static_cast<const T*>(args.c0) + b * hidden
                             : saved_cell + step_token(bos, eos, t - 1, args.reverse) * hidden;
    const T* g = saved_gates + token * gates;
    for (int64_t j = threadIdx.x; j < hidden; j += blockDim.x) {
      const LstmGates<A> activated{to_acc<A>(g[j]), to_acc<A>(g[hidden + j]), to_acc<A>(g[2 * hidden + j]),
                                   to_acc<A>(g[3 * hidden + j])};
      const LstmGrad<A> d = lstm_backward<A>(activated, to_acc<A>(saved_cell[token * hidden + j]), to_acc<A>(c_prev[j]),
                                             dh[j] + to_acc<A>(grad_output[token * hidden + j]), dc[j]);
      dc[j] = d.dc_prev;
      step_grad[j] = d.d_i;
      step_grad[hidden + j] = d.d_f;
      step_grad[2 * hidden + j] = d.d_g;
      step_grad[3 * hidden + j] = d.d_o;
      T* out = grad_gates + token * gates;
      out[j] = from_acc<T>(d.d_i);
      out[hidden + j] = from_acc<T>(d.d_f);
      out[2 * hidden + j] = from_acc<T>(d.d_g);
      out[3 * hidden + j] = from_acc<T>(d.d_o);
    }
    __syncthreads();  // step_grad complete; every read of dh done
    // dh_prev[k] = sum_r step_grad[r] * w_hh[r, k]: consecutive threads read consecutive k.
    for (int64_t k = threadIdx.x; k < hidden; k += blockDim.x) {
      A acc = A(0);
      for (int64_t r = 0; r < gates; ++r) acc += step_grad[r] * to_acc<A>(w[r * hidden + k]);
      dh[k] = acc;
    }
    __syncthreads();
  }
  for (int64_t j = threadIdx.x; j < hidden; j += blockDim.x) {
    static_cast<T*>(args.grad_h0)[b * hidden + j] = from_acc<T>(dh[j]);
    static_cast<T*>(args.grad_c0)[b * hidden + j] = from_acc<T>(dc[j]);
  }
}

}  // namespace

cudaError_t launch_lstm_forward(ElementType type, const LstmForwardArgs& args, cudaStream_t stream) {
  return with_element_type(type, [&](auto storage, auto accumulate) {
    using T = decltype(storage);
    using A = decltype(accumulate);
    return launch_per_sequence(lstm_forward_kernel<T, A, true>, lstm_forward_kernel<T, A, false>, args,
                               kLstmStateVectors.forward * args.hidden * sizeof(A),
                               4 * args.hidden * args.hidden * sizeof(T), stream);
  });
}

cudaError_t launch_lstm_backward(ElementType type, const LstmBackwardArgs& args, cudaStream_t stream) {
  return with_element_type(type, [&](auto storage, auto accumulate) {
    using T = decltype(storage);
    using A = decltype(accumulate);
    return launch_per_sequence(lstm_backward_kernel<T, A, true>, lstm_backward_kernel<T, A, false>, args,
                               kLstmStateVectors.backward * args.hidden * sizeof(A),
                               4 * args.hidden * args.hidden * sizeof(T), stream);
  });
}

}  // namespace cuda
}  // namespace padkern
