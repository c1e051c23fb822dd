// Launchers of the ragged 1-D convolution's CUDA kernels (csrc/cuda/conv1d.cu); the plan
// around them, with the GEMMs, is padkern/conv1d_plan.h. No torch headers: nvcc stays fast.
// Every tensor is row-major and every index int64; the bindings assert both.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "padkern/conv1d_layout.h"
#include "padkern/rnn_kernels.h"  // ElementType

namespace padkern {
namespace cuda {

struct ConvRowsArgs {
  const int64_t* offsets;  // [B+1]; contents unchecked, spans clamped (conv1d_layout.h)
  int64_t rows, batch;     // L, B
  ConvTaps taps;
};

// out[t, c] = bias[c] + sum_j taps_weight[j, c] * x[source_j(t), c]; taps_weight [k, C] in
// the accumulation type, x and out [L, C], bias [C] or null.
struct DepthwiseArgs {
  ConvRowsArgs rows;
  const void* x;
  const void* taps_weight;
  const void* bias;
  void* out;
  int64_t channels;
};

// partials[chunk, j, c] (accumulation type) = sum over the chunk's tokens t of
// grad[t, c] * x[source_j(t), c]; chunk = chunk_rows consecutive tokens.
struct DepthwiseWeightGradArgs {
  ConvRowsArgs rows;
  const void* grad;
  const void* x;
  void* partials;
  int64_t channels, chunk_rows, chunks;
};

// out[t, g * N + n] = bias + sum_j y[g, source_j(t), j * N + n]; y [G, L, k * N].
struct GatherTapsArgs {
  ConvRowsArgs rows;
  const void* y;
  const void* bias;
  void* out;
  int64_t groups, per_group;
};

// out[t, :] = x[t + shift, :] when that row is in t's sequence, else zeros; x, out [L, C]; the
// shift is rows.taps.first_shift (one tap).
struct ShiftedRowsArgs {
  ConvRowsArgs rows;
  const void* x;
  void* out;
  int64_t channels;
};

cudaError_t launch_conv_depthwise(ElementType type, const DepthwiseArgs& args, cudaStream_t stream);
cudaError_t launch_conv_depthwise_weight_grad(ElementType type, const DepthwiseWeightGradArgs& args,
                                              cudaStream_t stream);
cudaError_t launch_conv_gather_taps(ElementType type, const GatherTapsArgs& args, cudaStream_t stream);
cudaError_t launch_conv_shifted_rows(ElementType type, const ShiftedRowsArgs& args, cudaStream_t stream);

}  // namespace cuda
}  // namespace padkern
