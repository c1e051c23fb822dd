// Host entry points of the CUDA grouped matmuls and segment ops
// (csrc/cuda/grouped_linear.cu, csrc/cuda/segment.cu). Raw device pointers; strides in elements.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>

#include "padkern/rnn_kernels.h"  // ElementType
#include "padkern/int_math.h"

namespace padkern {
namespace cuda {

// Output tiles of the grouped GEMMs: rows of one sequence x output features.
// Tensor cores (half, bfloat16, float as TF32): 64 or 128 rows x 128 columns;
// the SIMT path (exact float, double): 64 x 64.
constexpr int kMmaTileCols = 128;
constexpr int kSimtTileRows = 64;
constexpr int kSimtTileCols = 64;

struct GemmTiles {
  int rows, cols;
  bool tensor_cores;
};

// Tile shape for a grouped GEMM. 128-row tiles read the weights half as often, but waste
// up to 127 rows per sequence and give fewer blocks: they are used when sequences average
// at least 192 rows and the 128-row grid still fills every SM twice.
inline GemmTiles grouped_gemm_tiles(ElementType type, bool allow_tf32, int64_t mean_rows, int64_t rows,
                                    int64_t cols, int sm_count) {
  const bool tensor_cores = type == ElementType::Float16 || type == ElementType::BFloat16 ||
                            (type == ElementType::Float32 && allow_tf32);
  if (!tensor_cores) return {kSimtTileRows, kSimtTileCols, false};
  const int64_t big_tiles = ceil_div(rows, 128) * ceil_div(cols, kMmaTileCols);
  const bool big = mean_rows >= 192 && big_tiles >= 2 * static_cast<int64_t>(sm_count);
  return {big ? 128 : 64, kMmaTileCols, true};
}

// A K-contiguous operand can be copied by 16-byte cp.async when every chunk of
// 16 / element_size elements starts 16-byte aligned and lies wholly inside or outside K:
// the base pointer, every other stride and K itself are multiples of the chunk.
inline bool chunk_aligned(const void* base, int64_t element_size, int64_t k_stride, int64_t depth,
                          std::initializer_list<int64_t> other_strides) {
  const int64_t chunk = 16 / element_size;
  if (k_stride != 1 || depth % chunk != 0 || reinterpret_cast<uintptr_t>(base) % 16 != 0) return false;
  for (const int64_t stride : other_strides)
    if (stride % chunk != 0) return false;
  return true;
}

struct GroupedLinearArgs {
  const void* input;          // padded [B, T, K] or ragged [L, K]
  const int64_t* offsets;     // [B+1]
  const int64_t* tile_starts; // [B+1]: prefix over cdiv(length_b, tiles.rows), lengths clamped as in sequence_span
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
  GemmTiles tiles;            // the shape tile_starts was counted in (grouped_gemm_tiles)
  bool input_vectorized, weight_vectorized;  // chunk_aligned, for the tensor-core path
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
  GemmTiles tiles;
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
