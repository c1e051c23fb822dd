// CUDA kernels of the ragged 1-D convolution: four memory-bound passes over the L real
// tokens (the GEMMs between them run in cuBLAS, see padkern/conv1d_plan.h). One thread
// per (token, channel), channels fastest, so a warp's reads and writes of a row coalesce;
// each thread finds its token's sequence by binary search over the offsets (log2 B reads,
// cached) and reads rows of that sequence only, clamped into the tensor
// (padkern/conv1d_layout.h), whatever the offsets hold.
#include "padkern/conv1d_kernels.h"
#include "padkern/cuda_check.h"
#include "recurrence_launch.cuh"  // to_acc / from_acc / with_element_type

namespace padkern {
namespace cuda {
namespace {

__device__ __forceinline__ int64_t grid_index() { return int64_t{blockIdx.x} * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t grid_stride() { return int64_t{gridDim.x} * blockDim.x; }

template <typename T, typename A>
__global__ void depthwise_kernel(DepthwiseArgs args) {
  const T* x = static_cast<const T*>(args.x);
  const A* w = static_cast<const A*>(args.taps_weight);
  const T* bias = static_cast<const T*>(args.bias);
  T* out = static_cast<T*>(args.out);
  const ConvRowsArgs& r = args.rows;
  const int64_t total = r.rows * args.channels;
  for (int64_t i = grid_index(); i < total; i += grid_stride()) {
    const int64_t t = i / args.channels, c = i - t * args.channels;
    const SequenceSpan span = token_span(r.offsets, r.batch, r.rows, t);
    A acc = bias == nullptr ? A(0) : to_acc<A>(bias[c]);
    for (int64_t j = 0; j < r.taps.count; ++j) {
      const int64_t source = tap_source(t, tap_shift(r.taps, j), span);
      if (source >= 0) acc += w[j * args.channels + c] * to_acc<A>(x[source * args.channels + c]);
    }
    out[i] = from_acc<T>(acc);
  }
}

template <typename T, typename A>
__global__ void depthwise_weight_grad_kernel(DepthwiseWeightGradArgs args) {
  const T* grad = static_cast<const T*>(args.grad);
  const T* x = static_cast<const T*>(args.x);
  A* partials = static_cast<A*>(args.partials);
  const ConvRowsArgs& r = args.rows;
  const int64_t total = args.chunks * r.taps.count * args.channels;
  for (int64_t i = grid_index(); i < total; i += grid_stride()) {
    const int64_t c = i % args.channels, j = (i / args.channels) % r.taps.count;
    const int64_t chunk = i / (args.channels * r.taps.count);
    const int64_t begin = chunk * args.chunk_rows;
    const int64_t end = begin + args.chunk_rows < r.rows ? begin + args.chunk_rows : r.rows;
    const int64_t shift = tap_shift(r.taps, j);
    A acc = A(0);
    // Walk the chunk's tokens, moving to the next sequence at each boundary: one binary
    // search per chunk, not per token.
    int64_t b = sequence_of_token(r.offsets, r.batch, begin);
    SequenceSpan span = sequence_span(r.offsets, b, r.rows);
    for (int64_t t = begin; t < end; ++t) {
      while (t >= span.eos && b + 1 < r.batch) span = sequence_span(r.offsets, ++b, r.rows);
      const int64_t source = tap_source(t, shift, span);
      if (source >= 0) acc += to_acc<A>(grad[t * args.channels + c]) * to_acc<A>(x[source * args.channels + c]);
    }
    partials[i] = acc;
  }
}

template <typename T, typename A>
__global__ void gather_taps_kernel(GatherTapsArgs args) {
  const T* y = static_cast<const T*>(args.y);
  const T* bias = static_cast<const T*>(args.bias);
  T* out = static_cast<T*>(args.out);
  const ConvRowsArgs& r = args.rows;
  const int64_t width = args.groups * args.per_group, y_row = r.taps.count * args.per_group;
  const int64_t total = r.rows * width;
  for (int64_t i = grid_index(); i < total; i += grid_stride()) {
    const int64_t t = i / width, column = i - t * width;
    const int64_t g = column / args.per_group, n = column - g * args.per_group;
    const SequenceSpan span = token_span(r.offsets, r.batch, r.rows, t);
    A acc = bias == nullptr ? A(0) : to_acc<A>(bias[column]);
    for (int64_t j = 0; j < r.taps.count; ++j) {
      const int64_t source = tap_source(t, tap_shift(r.taps, j), span);
      if (source >= 0) acc += to_acc<A>(y[(g * r.rows + source) * y_row + j * args.per_group + n]);
    }
    out[i] = from_acc<T>(acc);
  }
}

template <typename T>
__global__ void shifted_rows_kernel(ShiftedRowsArgs args, int64_t shift) {
  const T* x = static_cast<const T*>(args.x);
  T* out = static_cast<T*>(args.out);
  const ConvRowsArgs& r = args.rows;
  const int64_t total = r.rows * args.channels;
  for (int64_t i = grid_index(); i < total; i += grid_stride()) {
    const int64_t t = i / args.channels, c = i - t * args.channels;
    const int64_t source = tap_source(t, shift, token_span(r.offsets, r.batch, r.rows, t));
    out[i] = source >= 0 ? x[source * args.channels + c] : from_acc<T>(0.0f);
  }
}

// The plan never launches without sequences (B = 0: no span to look up) or work.
bool nothing_to_do(const ConvRowsArgs& rows, int64_t work) { return rows.batch == 0 || work == 0; }

}  // namespace

cudaError_t launch_conv_depthwise(ElementType type, const DepthwiseArgs& args, cudaStream_t stream) {
  const int64_t work = args.rows.rows * args.channels;
  if (nothing_to_do(args.rows, work)) return cudaSuccess;
  return with_element_type(type, [&](auto storage, auto accumulate) {
    depthwise_kernel<decltype(storage), decltype(accumulate)><<<blocks_for(work), kThreadsPerBlock, 0, stream>>>(args);
    return cudaGetLastError();
  });
}

cudaError_t launch_conv_depthwise_weight_grad(ElementType type, const DepthwiseWeightGradArgs& args,
                                              cudaStream_t stream) {
  const int64_t work = args.chunks * args.rows.taps.count * args.channels;
  if (nothing_to_do(args.rows, work)) return cudaSuccess;
  return with_element_type(type, [&](auto storage, auto accumulate) {
    depthwise_weight_grad_kernel<decltype(storage), decltype(accumulate)>
        <<<blocks_for(work), kThreadsPerBlock, 0, stream>>>(args);
    return cudaGetLastError();
  });
}

cudaError_t launch_conv_gather_taps(ElementType type, const GatherTapsArgs& args, cudaStream_t stream) {
  const int64_t work = args.rows.rows * args.groups * args.per_group;
  if (nothing_to_do(args.rows, work)) return cudaSuccess;
  return with_element_type(type, [&](auto storage, auto accumulate) {
    gather_taps_kernel<decltype(storage), decltype(accumulate)><<<blocks_for(work), kThreadsPerBlock, 0, stream>>>(args);
    return cudaGetLastError();
  });
}

cudaError_t launch_conv_shifted_rows(ElementType type, const ShiftedRowsArgs& args, cudaStream_t stream) {
  const int64_t work = args.rows.rows * args.channels;
  if (nothing_to_do(args.rows, work)) return cudaSuccess;
  return with_element_type(type, [&](auto storage, auto) {
    shifted_rows_kernel<decltype(storage)><<<blocks_for(work), kThreadsPerBlock, 0, stream>>>(
        args, args.rows.taps.first_shift);
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace padkern
