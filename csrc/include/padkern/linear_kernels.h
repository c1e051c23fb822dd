// Host entry points of the CUDA grouped matmuls and segment ops
// (csrc/cuda/grouped_linear.cu, csrc/cuda/segment.cu). Raw device pointers; strides in elements.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "padkern/rnn_kernels.h"  // ElementType

namespace padkern {
namespace cuda {

// Output tile of the grouped GEMMs: rows of one sequence x output features.
constexpr int kTileRows = 64;
constexpr int kTileCols = 64;

struct GroupedLinearArgs {
  const void* input;          // padded [B, T, K] or ragged [L, K]
  const int64_t* offsets;     // [B+1]
  const int64_t* tile_starts; // [B+1]: prefix over cdiv(length_b, kTileRows), lengths clamped as in sequence_span
  const void* weight;         // element (b, k, n) at b*w_stride_b + k*w_stride_k + n*w_stride_n
  const void* bias;           // [N] or null
  void* output;               // padded [B, T, N] or ragged [L, N], contiguous
  void* preactivation;        // like output, or null
  int64_t batch, features_in, features_out;
  int64_t in_stride_b, in_stride_t, in_stride_k;  // in_stride_b unused for ragged input
  int64_t out_stride_b, out_stride_t;
  int64_t w_stride_b, w_stride_k, w_stride_n;
  int64_t row_tiles;          // grid size along rows: an upper bound of tile_starts[B]
  int64_t row_limit;          // rows a sequence may span: T (padded) or L (ragged)
  bool padded;
  int activation;             // 0 none, 1 relu, 2 gelu, 3 silu
};

struct OuterBmmArgs {
  const void* x;  // [L, M] contiguous
  const void* y;  // [L, N] contiguous
  const int64_t* offsets;
  void* output;   // [B, M, N] contiguous
  int64_t tokens; // L
  int64_t batch, rows, cols;
};

struct SegmentArgs {
  const void* values;  // [L, D] contiguous
  const int64_t* offsets;
  void* output;        // [B, D] (reduce) or [L, D] (softmax)
  int64_t* argmax;     // [B, D] for max, else null
  int64_t tokens;      // L
  int64_t batch, features;
  int mode;            // 0 sum, 1 mean, 2 max
};

cudaError_t launch_grouped_linear(ElementType type, const GroupedLinearArgs& args, cudaStream_t stream);
cudaError_t launch_ragged_outer_bmm(ElementType type, const OuterBmmArgs& args, cudaStream_t stream);
cudaError_t launch_segment_reduce(ElementType type, const SegmentArgs& args, cudaStream_t stream);
cudaError_t launch_segment_softmax(ElementType type, const SegmentArgs& args, cudaStream_t stream);

}  // namespace cuda
}  // namespace padkern
