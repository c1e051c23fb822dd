// CUDA Elman RNN recurrence (torch.nn.RNN, tanh or relu) over a ragged batch, forward
// and backward through time. One block per sequence (see recurrence_launch.cuh); the
// cell maths from rnn_cells.h, shared with the CPU kernels.
#include "padkern/ragged_layout.h"
#include "padkern/rnn_cells.h"
#include "recurrence_launch.cuh"

namespace padkern {
namespace cuda {
namespace {

// Shared memory: h, h_next [H] (A), then w_hh^T [H, H] (T) when it fits.
template <typename T, typename A, bool WeightsShared>
__global__ void __launch_bounds__(kMaxThreads) rnn_forward_kernel(RnnForwardArgs args) {
  extern __shared__ __align__(16) unsigned char shared_raw[];
  const int64_t hidden = args.hidden, b = blockIdx.x;
  A* h = reinterpret_cast<A*>(shared_raw);
  A* h_next = h + hidden;
  const T* w = stage_weights<WeightsShared>(static_cast<const T*>(args.w_hh_t),
                                           reinterpret_cast<T*>(h_next + hidden), hidden * hidden);
  const T* h0 = static_cast<const T*>(args.h0) + b * hidden;
  for (int64_t j = threadIdx.x; j < hidden; j += blockDim.x) h[j] = to_acc<A>(h0[j]);
  __syncthreads();

  const T* gates_x = static_cast<const T*>(args.gates_x);
  T* output = static_cast<T*>(args.output);
  const SequenceSpan span = sequence_span(args.offsets, b, args.tokens);
  const int64_t bos = span.bos, eos = span.eos;
  for (int64_t t = 0; t < eos - bos; ++t) {
    const int64_t token = step_token(bos, eos, t, args.reverse);
    for (int64_t j = threadIdx.x; j < hidden; j += blockDim.x) {
      A pre = to_acc<A>(gates_x[token * hidden + j]);
      for (int64_t k = 0; k < hidden; ++k) pre += h[k] * to_acc<A>(w[k * hidden + j]);
      const A value = rnn_forward<A>(pre, args.relu);
      h_next[j] = value;
      output[token * hidden + j] = from_acc<T>(value);
    }
    __syncthreads();  // h_next complete; every read of h done
    A* swap = h;
    h = h_next;
    h_next = swap;
  }
  T* h_n = static_cast<T*>(args.h_n) + b * hidden;
  for (int64_t j = threadIdx.x; j < hidden; j += blockDim.x) h_n[j] = from_acc<T>(h[j]);
}

// Shared memory: dh and the step's pre-activation gradients [H] (A), then w_hh [H, H] (T) when it fits.
template <typename T, typename A, bool WeightsShared>
__global__ void __launch_bounds__(kMaxThreads) rnn_backward_kernel(RnnBackwardArgs args) {
  extern __shared__ __align__(16) unsigned char shared_raw[];
  const int64_t hidden = args.hidden, b = blockIdx.x;
  A* dh = reinterpret_cast<A*>(shared_raw);
  A* step_grad = dh + hidden;
  const T* w = stage_weights<WeightsShared>(static_cast<const T*>(args.w_hh),
                                           reinterpret_cast<T*>(step_grad + hidden), hidden * hidden);
  for (int64_t j = threadIdx.x; j < hidden; j += blockDim.x) {
    dh[j] = to_acc<A>(static_cast<const T*>(args.grad_h_n)[b * hidden + j]);
  }
  __syncthreads();

  const T* grad_output = static_cast<const T*>(args.grad_output);
  const T* output = static_cast<const T*>(args.output);
  T* grad_pre = static_cast<T*>(args.grad_pre);
  const SequenceSpan span = sequence_span(args.offsets, b, args.tokens);
  const int64_t bos = span.bos, eos = span.eos;
  for (int64_t t = eos - bos - 1; t >= 0; --t) {
    const int64_t token = step_token(bos, eos, t, args.reverse);
    for (int64_t j = threadIdx.x; j < hidden; j += blockDim.x) {
      const A d = rnn_backward<A>(to_acc<A>(output[token * hidden + j]),
                                  dh[j] + to_acc<A>(grad_output[token * hidden + j]), args.relu);
      step_grad[j] = d;
      grad_pre[token * hidden + j] = from_acc<T>(d);
    }
    __syncthreads();  // step_grad complete; every read of dh done
    for (int64_t k = threadIdx.x; k < hidden; k += blockDim.x) {
      A acc = A(0);
      for (int64_t r = 0; r < hidden; ++r) acc += step_grad[r] * to_acc<A>(w[r * hidden + k]);
      dh[k] = acc;
    }
    __syncthreads();  // dh complete; every read of step_grad done
  }
  for (int64_t j = threadIdx.x; j < hidden; j += blockDim.x) {
    static_cast<T*>(args.grad_h0)[b * hidden + j] = from_acc<T>(dh[j]);
  }
}

}  // namespace

cudaError_t launch_rnn_forward(ElementType type, const RnnForwardArgs& args, cudaStream_t stream) {
  return with_element_type(type, [&](auto storage, auto accumulate) {
    using T = decltype(storage);
    using A = decltype(accumulate);
    return launch_per_sequence(rnn_forward_kernel<T, A, true>, rnn_forward_kernel<T, A, false>, args,
                               kRnnStateVectors.forward * args.hidden * sizeof(A),
                               args.hidden * args.hidden * sizeof(T), stream);
  });
}

cudaError_t launch_rnn_backward(ElementType type, const RnnBackwardArgs& args, cudaStream_t stream) {
  return with_element_type(type, [&](auto storage, auto accumulate) {
    using T = decltype(storage);
    using A = decltype(accumulate);
    return launch_per_sequence(rnn_backward_kernel<T, A, true>, rnn_backward_kernel<T, A, false>, args,
                               kRnnStateVectors.backward * args.hidden * sizeof(A),
                               args.hidden * args.hidden * sizeof(T), stream);
  });
}

}  // namespace cuda
}  // namespace padkern
