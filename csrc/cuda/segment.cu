// CUDA segment reductions and softmax: block (sequence, feature chunk; every 65535th chunk
// past the grid's y), one thread per feature walking the sequence's rows, so each row read
// is coalesced.
#include <algorithm>
#include <limits>

#include "padkern/cuda_check.h"
#include "padkern/linear_kernels.h"
#include "padkern/ragged_layout.h"
#include "padkern/scalar_math.h"
#include "recurrence_launch.cuh"  // to_acc / from_acc

namespace padkern {
namespace cuda {
namespace {

constexpr int kSegmentThreads = 256;

// Feature column d of sequence b: sum, mean or max (with its row).
template <typename T, typename A>
__device__ void reduce_column(const SegmentArgs& args, int64_t b, int64_t d) {
  const T* values = static_cast<const T*>(args.values);
  const SequenceSpan span = sequence_span(args.offsets, b, args.tokens);
  const int64_t bos = span.bos, eos = span.eos;
  A acc = args.mode == 2 ? -std::numeric_limits<A>::infinity() : A(0);
  int64_t best = -1;
  for (int64_t t = bos; t < eos; ++t) {
    const A v = to_acc<A>(values[t * args.features + d]);
    if (args.mode == 2) {
      // The first row, any larger value, and the first NaN (which then stays) take the place.
      if (best < 0 || v > acc || (v != v && acc == acc)) {
        acc = v;
        best = t;
      }
    } else {
      acc += v;
    }
  }
  if (args.mode == 1 && eos > bos) acc /= static_cast<A>(eos - bos);
  if (eos == bos) acc = A(0);
  static_cast<T*>(args.output)[b * args.features + d] = from_acc<T>(acc);
  if (args.argmax != nullptr) args.argmax[b * args.features + d] = best;
}

// Feature column d of sequence b: its softmax over the sequence's rows.
template <typename T, typename A>
__device__ void softmax_column(const SegmentArgs& args, int64_t b, int64_t d) {
  const T* values = static_cast<const T*>(args.values);
  T* out = static_cast<T*>(args.output);
  const SequenceSpan span = sequence_span(args.offsets, b, args.tokens);
  const int64_t bos = span.bos, eos = span.eos;
  A peak = -std::numeric_limits<A>::infinity(), total = A(0);
  for (int64_t t = bos; t < eos; ++t) peak = max(peak, to_acc<A>(values[t * args.features + d]));
  for (int64_t t = bos; t < eos; ++t) total += exp_of(to_acc<A>(values[t * args.features + d]) - peak);
  for (int64_t t = bos; t < eos; ++t) {
    out[t * args.features + d] = from_acc<T>(exp_of(to_acc<A>(values[t * args.features + d]) - peak) / total);
  }
}

template <typename T, typename A>
__global__ void segment_reduce_kernel(SegmentArgs args) {
  const int64_t stride = int64_t{gridDim.y} * kSegmentThreads;
  for (int64_t d = int64_t{blockIdx.y} * kSegmentThreads + threadIdx.x; d < args.features; d += stride) {
    reduce_column<T, A>(args, blockIdx.x, d);
  }
}

template <typename T, typename A>
__global__ void segment_softmax_kernel(SegmentArgs args) {
  const int64_t stride = int64_t{gridDim.y} * kSegmentThreads;
  for (int64_t d = int64_t{blockIdx.y} * kSegmentThreads + threadIdx.x; d < args.features; d += stride) {
    softmax_column<T, A>(args, blockIdx.x, d);
  }
}

dim3 segment_grid(const SegmentArgs& args) {
  // Past kMaxGridY chunks of features, each block takes several.
  const int64_t chunks = ceil_div(args.features, kSegmentThreads);
  return dim3(static_cast<unsigned>(args.batch), static_cast<unsigned>(std::min(chunks, kMaxGridY)));
}

template <typename T, typename A>
cudaError_t reduce(const SegmentArgs& args, cudaStream_t stream) {
  if (args.batch == 0 || args.features == 0) return cudaSuccess;
  segment_reduce_kernel<T, A><<<segment_grid(args), kSegmentThreads, 0, stream>>>(args);
  return cudaGetLastError();
}

template <typename T, typename A>
cudaError_t softmax(const SegmentArgs& args, cudaStream_t stream) {
  if (args.batch == 0 || args.features == 0) return cudaSuccess;
  segment_softmax_kernel<T, A><<<segment_grid(args), kSegmentThreads, 0, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_segment_reduce(ElementType type, const SegmentArgs& args, cudaStream_t stream) {
  return with_element_type(type, [&](auto storage, auto accumulate) {
    return reduce<decltype(storage), decltype(accumulate)>(args, stream);
  });
}

cudaError_t launch_segment_softmax(ElementType type, const SegmentArgs& args, cudaStream_t stream) {
  return with_element_type(type, [&](auto storage, auto accumulate) {
    return softmax<decltype(storage), decltype(accumulate)>(args, stream);
  });
}

}  // namespace cuda
}  // namespace padkern
