// CUDA GRU recurrence over a ragged batch, forward and backward through time.
// One block per sequence (see recurrence_launch.cuh); gate maths from rnn_cells.h,
// shared with the CPU kernels.
#include "padkern/ragged_layout.h"
#include "padkern/rnn_cells.h"
#include "recurrence_launch.cuh"

namespace padkern {
namespace cuda {
namespace {

// Shared memory: h, h_next [H] (A), then w_hh^T [H, 3H] (T) when it fits.
template <typename T, typename A, bool WeightsShared>
__global__ void __launch_bounds__(kMaxThreads) gru_forward_kernel(GruForwardArgs args) {
  extern __shared__ __align__(16) unsigned char shared_raw[];
  const int64_t hidden = args.hidden, gates = 3 * hidden, b = blockIdx.x;
  A* h = reinterpret_cast<A*>(shared_raw);
  A* h_next = h + hidden;
  const T* w = stage_weights<WeightsShared>(static_cast<const T*>(args.w_hh_t),
                                           reinterpret_cast<T*>(h_next + hidden), hidden * gates);
  const T* h0 = static_cast<const T*>(args.h0) + b * hidden;
  for (int64_t j = threadIdx.x; j < hidden; j += blockDim.x) h[j] = to_acc<A>(h0[j]);
  __syncthreads();

  const T* gates_x = static_cast<const T*>(args.gates_x);
  const T* b_hh = static_cast<const T*>(args.b_hh);
  T* output = static_cast<T*>(args.output);
  T* saved_gates = static_cast<T*>(args.saved_gates);
  T* saved_hh_n = static_cast<T*>(args.saved_hh_n);
  const SequenceSpan span = sequence_span(args.offsets, b, args.tokens);
  const int64_t bos = span.bos, eos = span.eos;
  for (int64_t t = 0; t < eos - bos; ++t) {
    const int64_t token = step_token(bos, eos, t, args.reverse);
    const T* x = gates_x + token * gates;
    for (int64_t j = threadIdx.x; j < hidden; j += blockDim.x) {
      A hh_r = to_acc<A>(b_hh[j]), hh_z = to_acc<A>(b_hh[hidden + j]), hh_n = to_acc<A>(b_hh[2 * hidden + j]);
      const T* w_j = w + j;
      for (int64_t k = 0; k < hidden; ++k) {
        const A h_k = h[k];
        const T* w_k = w_j + k * gates;
        hh_r += h_k * to_acc<A>(w_k[0]);
        hh_z += h_k * to_acc<A>(w_k[hidden]);
        hh_n += h_k * to_acc<A>(w_k[2 * hidden]);
      }
      const GruStep<A> s = gru_forward<A>(to_acc<A>(x[j]), to_acc<A>(x[hidden + j]), to_acc<A>(x[2 * hidden + j]), hh_r,
                                          hh_z, hh_n, h[j]);
      h_next[j] = s.h;
      output[token * hidden + j] = from_acc<T>(s.h);
      if (saved_gates != nullptr) {
        T* g = saved_gates + token * gates;
        g[j] = from_acc<T>(s.r);
        g[hidden + j] = from_acc<T>(s.z);
        g[2 * hidden + j] = from_acc<T>(s.n);
        saved_hh_n[token * hidden + j] = from_acc<T>(hh_n);
      }
    }
    __syncthreads();  // h_next complete; every read of h done
    A* swap = h;
    h = h_next;
    h_next = swap;
  }
  T* h_n = static_cast<T*>(args.h_n) + b * hidden;
  for (int64_t j = threadIdx.x; j < hidden; j += blockDim.x) h_n[j] = from_acc<T>(h[j]);
}

// Shared memory: dh [H] and the step's recurrent-side gate gradients [3H] (A), then w_hh [3H, H] (T) when it fits.
template <typename T, typename A, bool WeightsShared>
__global__ void __launch_bounds__(kMaxThreads) gru_backward_kernel(GruBackwardArgs args) {
  extern __shared__ __align__(16) unsigned char shared_raw[];
  const int64_t hidden = args.hidden, gates = 3 * hidden, b = blockIdx.x;
  A* dh = reinterpret_cast<A*>(shared_raw);
  A* step_grad = dh + hidden;
  const T* w = stage_weights<WeightsShared>(static_cast<const T*>(args.w_hh),
                                           reinterpret_cast<T*>(step_grad + gates), hidden * gates);
  for (int64_t j = threadIdx.x; j < hidden; j += blockDim.x) {
    dh[j] = to_acc<A>(static_cast<const T*>(args.grad_h_n)[b * hidden + j]);
  }
  __syncthreads();

  const T* grad_output = static_cast<const T*>(args.grad_output);
  const T* saved_gates = static_cast<const T*>(args.saved_gates);
  const T* saved_hh_n = static_cast<const T*>(args.saved_hh_n);
  const T* output = static_cast<const T*>(args.output);
  T* grad_x = static_cast<T*>(args.grad_gates_x);
  T* grad_hh = static_cast<T*>(args.grad_gates_hh);
  const SequenceSpan span = sequence_span(args.offsets, b, args.tokens);
  const int64_t bos = span.bos, eos = span.eos;
  for (int64_t t = eos - bos - 1; t >= 0; --t) {
    const int64_t token = step_token(bos, eos, t, args.reverse);
    const T* h_prev = t == 0 ? static_cast<const T*>(args.h0) + b * hidden
                             : output + step_token(bos, eos, t - 1, args.reverse) * hidden;
    const T* g = saved_gates + token * gates;
    for (int64_t j = threadIdx.x; j < hidden; j += blockDim.x) {
      const GruGrad<A> d =
          gru_backward<A>(to_acc<A>(g[j]), to_acc<A>(g[hidden + j]), to_acc<A>(g[2 * hidden + j]),
                          to_acc<A>(saved_hh_n[token * hidden + j]), to_acc<A>(h_prev[j]),
                          dh[j] + to_acc<A>(grad_output[token * hidden + j]));
      step_grad[j] = d.d_r;
      step_grad[hidden + j] = d.d_z;
      step_grad[2 * hidden + j] = d.d_hh_n;
      T* out_x = grad_x + token * gates;
      T* out_hh = grad_hh + token * gates;
      out_x[j] = out_hh[j] = from_acc<T>(d.d_r);
      out_x[hidden + j] = out_hh[hidden + j] = from_acc<T>(d.d_z);
      out_x[2 * hidden + j] = from_acc<T>(d.d_n);
      out_hh[2 * hidden + j] = from_acc<T>(d.d_hh_n);
      dh[j] = d.dh_prev_direct;  // only this thread reads or writes dh[j] until the barrier
    }
    __syncthreads();  // step_grad complete
    for (int64_t k = threadIdx.x; k < hidden; k += blockDim.x) {
      A acc = dh[k];
      for (int64_t r = 0; r < gates; ++r) acc += step_grad[r] * to_acc<A>(w[r * hidden + k]);
      dh[k] = acc;
    }
    __syncthreads();
  }
  for (int64_t j = threadIdx.x; j < hidden; j += blockDim.x) {
    static_cast<T*>(args.grad_h0)[b * hidden + j] = from_acc<T>(dh[j]);
  }
}

}  // namespace

cudaError_t launch_gru_forward(ElementType type, const GruForwardArgs& args, cudaStream_t stream) {
  return with_element_type(type, [&](auto storage, auto accumulate) {
    using T = decltype(storage);
    using A = decltype(accumulate);
    return launch_per_sequence(gru_forward_kernel<T, A, true>, gru_forward_kernel<T, A, false>, args,
                               kGruStateVectors.forward * args.hidden * sizeof(A),
                               3 * args.hidden * args.hidden * sizeof(T), stream);
  });
}

cudaError_t launch_gru_backward(ElementType type, const GruBackwardArgs& args, cudaStream_t stream) {
  return with_element_type(type, [&](auto storage, auto accumulate) {
    using T = decltype(storage);
    using A = decltype(accumulate);
    return launch_per_sequence(gru_backward_kernel<T, A, true>, gru_backward_kernel<T, A, false>, args,
                               kGruStateVectors.backward * args.hidden * sizeof(A),
                               3 * args.hidden * args.hidden * sizeof(T), stream);
  });
}

}  // namespace cuda
}  // namespace padkern
