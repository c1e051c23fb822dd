// CUDA grouped matmuls over ragged batches. Main loops: mma_pipeline.cuh (tensor cores:
// half, bfloat16, float as TF32) and simt_tile_gemm.cuh (exact float, double).
//
// grouped_linear: a (row tile, column tile) grid, taken in grouped order (tile_order.h).
// Row tiles come from a prefix
// over per-sequence tile counts (tile_starts, built on the device in the tile shape
// args.tiles names): a block finds its sequence by binary search, reads that sequence's
// real rows straight from the padded or ragged input (never a packed copy) and writes
// straight into the output layout, with bias and activation fused into the epilogue.
// Blocks past the last tile exit.
//
// ragged_outer_bmm: block (x = sequence, y = output tile) reduces over that sequence's
// rows: out[b] = x_b^T @ y_b.
#include <type_traits>

#include "mma_pipeline.cuh"
#include "padkern/ragged_layout.h"
#include "padkern/scalar_math.h"
#include "padkern/tile_order.h"
#include "simt_tile_gemm.cuh"

namespace padkern {
namespace cuda {
namespace {

template <typename T>
constexpr bool kHalfPrecision = std::is_same<T, __half>::value || std::is_same<T, __nv_bfloat16>::value;

// The rows of one sequence a grouped_linear block computes: [row0, row0 + tile rows) of
// sequence b, which spans [bos, bos + length) of a ragged input (bos = 0 when padded).
struct RowTile {
  int64_t b, bos, length, row0;
};

constexpr int64_t kTileGroup = 8;  // row tiles per group of the block order

__device__ __forceinline__ TileCoord block_tile() {
  return grouped_tile_order(int64_t{blockIdx.y} * gridDim.x + blockIdx.x, gridDim.x, gridDim.y, kTileGroup);
}

// False when row tile `index` has no rows; the answer is the same for every thread of
// the block, so it may return before any barrier.
__device__ __forceinline__ bool find_row_tile(const GroupedLinearArgs& args, int tile_rows, int64_t index,
                                              RowTile& tile) {
  if (index >= args.tile_starts[args.batch]) return false;
  const int64_t b = sequence_of_token(args.tile_starts, args.batch, index);
  const SequenceSpan span = args.padded ? SequenceSpan{0, padded_length_of(args.offsets, b, args.row_limit)}
                                        : sequence_span(args.offsets, b, args.row_limit);
  tile = {b, span.bos, span.length(), (index - args.tile_starts[b]) * tile_rows};
  return tile.row0 >= 0 && tile.row0 < tile.length;
}

__device__ __forceinline__ int64_t input_row(const GroupedLinearArgs& args, const RowTile& tile, int64_t row) {
  return args.padded ? tile.b * args.in_stride_b + row * args.in_stride_t : (tile.bos + row) * args.in_stride_t;
}

// base[at] = first and, when `both`, base[at + 1] = second: one store where aligned.
template <typename T>
__device__ __forceinline__ void store_one_or_two(T* base, int64_t at, T first, T second, bool both) {
  struct alignas(2 * sizeof(T)) Two {
    T first, second;
  };
  if (both && reinterpret_cast<uintptr_t>(base + at) % sizeof(Two) == 0) {
    *reinterpret_cast<Two*>(base + at) = Two{first, second};
    return;
  }
  base[at] = first;
  if (both) base[at + 1] = second;
}

// Bias, activation and the stores of output elements (row, col) and, where `count` is 2
// and it exists, (row, col + 1).
template <typename T, typename A, int Act>
__device__ __forceinline__ void store_output(const GroupedLinearArgs& args, const RowTile& tile, int64_t row,
                                             int64_t col, A dot0, A dot1, int count) {
  if (row >= tile.length || col >= args.features_out) return;
  const bool both = count == 2 && col + 1 < args.features_out;
  const T* bias = static_cast<const T*>(args.bias);
  const A z0 = dot0 + (bias != nullptr ? to_acc<A>(bias[col]) : A(0));
  const A z1 = both ? dot1 + (bias != nullptr ? to_acc<A>(bias[col + 1]) : A(0)) : A(0);
  const int64_t at =
      (args.padded ? tile.b * args.out_stride_b + row * args.out_stride_t : (tile.bos + row) * args.out_stride_t) + col;
  if (args.preactivation != nullptr) {
    store_one_or_two(static_cast<T*>(args.preactivation), at, from_acc<T>(z0), from_acc<T>(z1), both);
  }
  store_one_or_two(static_cast<T*>(args.output), at, from_acc<T>(activate<Act, A>(z0)),
                   from_acc<T>(activate<Act, A>(z1)), both);
}

template <typename T, int TileRows, int Act>
__global__ void __launch_bounds__(kMmaThreads) grouped_linear_mma_kernel(GroupedLinearArgs args) {
  const TileCoord coord = block_tile();
  RowTile tile;
  if (!find_row_tile(args, TileRows, coord.row, tile)) return;
  const int64_t col0 = coord.col * kMmaTileCols;
  const MmaOperand<T> a{static_cast<const T*>(args.input) + input_row(args, tile, tile.row0), args.in_stride_t,
                        args.in_stride_k, tile.length - tile.row0, args.input_vectorized};
  const MmaOperand<T> b{static_cast<const T*>(args.weight) + tile.b * args.w_stride_b + col0 * args.w_stride_n,
                        args.w_stride_n, args.w_stride_k, args.features_out - col0, args.weight_vectorized};
  mma_tile_gemm<T, TileRows>(a, b, args.features_in, [&](int r, int c, float dot0, float dot1) {
    store_output<T, float, Act>(args, tile, tile.row0 + r, col0 + c, dot0, dot1, 2);
  });
}

// A minimum of 1 block per SM lets ptxas use the registers it needs (aiming higher, it
// spilled on sm_80).
template <typename T, typename A, int Act>
__global__ void __launch_bounds__(kSimtThreads, 1) grouped_linear_simt_kernel(GroupedLinearArgs args) {
  __shared__ CTile<A> c_tile;
  const TileCoord coord = block_tile();
  RowTile tile;
  if (!find_row_tile(args, kSimtTileRows, coord.row, tile)) return;
  const int64_t col0 = coord.col * kSimtTileCols;
  const T* input = static_cast<const T*>(args.input);
  const T* weight = static_cast<const T*>(args.weight) + tile.b * args.w_stride_b;
  const T zero = from_acc<T>(A(0));
  auto load_a = [&](int r, int64_t k) -> T {
    const int64_t row = tile.row0 + r;
    return (row < tile.length && k < args.features_in) ? input[input_row(args, tile, row) + k * args.in_stride_k]
                                                        : zero;
  };
  auto load_b = [&](int64_t k, int c) -> T {
    const int64_t col = col0 + c;
    return (k < args.features_in && col < args.features_out) ? weight[k * args.w_stride_k + col * args.w_stride_n]
                                                             : zero;
  };
  simt_tile_gemm<T, A>(load_a, load_b, args.features_in, c_tile);
  for (int i = threadIdx.x; i < kSimtTileRows * kSimtTileCols; i += kSimtThreads) {
    store_output<T, A, Act>(args, tile, tile.row0 + i / kSimtTileCols, col0 + i % kSimtTileCols,
                            c_tile[i / kSimtTileCols][i % kSimtTileCols], A(0), 1);
  }
}

// Sequence b's rows of the outer product: x_b [length, rows], y_b [length, cols].
struct OuterOperands {
  int64_t length;
  int64_t row0, col0;
};

__device__ __forceinline__ OuterOperands outer_tile(const OuterBmmArgs& args, int tile_rows, int tile_cols,
                                                    int64_t& bos) {
  const int64_t col_tiles = (args.cols + tile_cols - 1) / tile_cols;
  const SequenceSpan span = sequence_span(args.offsets, blockIdx.x, args.tokens);
  bos = span.bos;
  return {span.length(), (blockIdx.y / col_tiles) * tile_rows, (blockIdx.y % col_tiles) * tile_cols};
}

template <typename T, int TileRows>
__global__ void __launch_bounds__(kMmaThreads) ragged_outer_bmm_mma_kernel(OuterBmmArgs args) {
  int64_t bos;
  const OuterOperands o = outer_tile(args, TileRows, kMmaTileCols, bos);
  // A = x_b^T and B = y_b^T held [row][t]: rows adjacent in memory, t strided.
  const MmaOperand<T> a{static_cast<const T*>(args.x) + bos * args.rows + o.row0, 1, args.rows, args.rows - o.row0,
                        false};
  const MmaOperand<T> b{static_cast<const T*>(args.y) + bos * args.cols + o.col0, 1, args.cols, args.cols - o.col0,
                        false};
  T* out = static_cast<T*>(args.output) + int64_t{blockIdx.x} * args.rows * args.cols;
  mma_tile_gemm<T, TileRows>(a, b, o.length, [&](int r, int c, float dot0, float dot1) {
    const int64_t row = o.row0 + r, col = o.col0 + c;
    if (row < args.rows && col < args.cols) {
      store_one_or_two(out, row * args.cols + col, from_acc<T>(dot0), from_acc<T>(dot1), col + 1 < args.cols);
    }
  });
}

template <typename T, typename A>
__global__ void __launch_bounds__(kSimtThreads) ragged_outer_bmm_simt_kernel(OuterBmmArgs args) {
  __shared__ CTile<A> c_tile;
  int64_t bos;
  const OuterOperands o = outer_tile(args, kSimtTileRows, kSimtTileCols, bos);
  const T* x = static_cast<const T*>(args.x) + bos * args.rows;
  const T* y = static_cast<const T*>(args.y) + bos * args.cols;
  const T zero = from_acc<T>(A(0));
  // A = x_b^T: A[r][t] = x[t][row0 + r]; B = y_b: B[t][c] = y[t][col0 + c]; K = the sequence's length.
  auto load_a = [&](int r, int64_t t) -> T {
    return (t < o.length && o.row0 + r < args.rows) ? x[t * args.rows + o.row0 + r] : zero;
  };
  auto load_b = [&](int64_t t, int c) -> T {
    return (t < o.length && o.col0 + c < args.cols) ? y[t * args.cols + o.col0 + c] : zero;
  };
  simt_tile_gemm<T, A>(load_a, load_b, o.length, c_tile);
  T* out = static_cast<T*>(args.output) + int64_t{blockIdx.x} * args.rows * args.cols;
  for (int i = threadIdx.x; i < kSimtTileRows * kSimtTileCols; i += kSimtThreads) {
    const int64_t row = o.row0 + i / kSimtTileCols, col = o.col0 + i % kSimtTileCols;
    if (row < args.rows && col < args.cols) out[row * args.cols + col] = from_acc<T>(c_tile[i / kSimtTileCols][i % kSimtTileCols]);
  }
}

template <typename Launch>
void with_activation(int activation, const Launch& launch) {
  switch (activation) {
    case kRelu: launch(std::integral_constant<int, kRelu>{}); break;
    case kGelu: launch(std::integral_constant<int, kGelu>{}); break;
    case kSilu: launch(std::integral_constant<int, kSilu>{}); break;
    default: launch(std::integral_constant<int, kIdentity>{});
  }
}

// The tile shape the host planned must be one this element type has kernels for.
template <typename T>
bool supported_tiles(const GemmTiles& tiles) {
  if (tiles.tensor_cores) {
    return !std::is_same<T, double>::value && tiles.cols == kMmaTileCols && (tiles.rows == 64 || tiles.rows == 128);
  }
  return !kHalfPrecision<T> && tiles.rows == kSimtTileRows && tiles.cols == kSimtTileCols;
}

template <typename T, typename A>
cudaError_t grouped_linear(const GroupedLinearArgs& args, cudaStream_t stream) {
  if (args.batch == 0 || args.features_out == 0 || args.row_tiles == 0) return cudaSuccess;
  if (!supported_tiles<T>(args.tiles)) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(args.row_tiles),
                  static_cast<unsigned>((args.features_out + args.tiles.cols - 1) / args.tiles.cols));
  if constexpr (!std::is_same<T, double>::value) {
    if (args.tiles.tensor_cores) {
      with_activation(args.activation, [&](auto act) {
        if (args.tiles.rows == 128) {
          grouped_linear_mma_kernel<T, 128, decltype(act)::value><<<grid, kMmaThreads, 0, stream>>>(args);
        } else {
          grouped_linear_mma_kernel<T, 64, decltype(act)::value><<<grid, kMmaThreads, 0, stream>>>(args);
        }
      });
      return cudaGetLastError();
    }
  }
  if constexpr (!kHalfPrecision<T>) {
    with_activation(args.activation, [&](auto act) {
      grouped_linear_simt_kernel<T, A, decltype(act)::value><<<grid, kSimtThreads, 0, stream>>>(args);
    });
  }
  return cudaGetLastError();
}

template <typename T, typename A>
cudaError_t outer_bmm(const OuterBmmArgs& args, cudaStream_t stream) {
  if (args.batch == 0 || args.rows == 0 || args.cols == 0) return cudaSuccess;
  if (!supported_tiles<T>(args.tiles)) return cudaErrorInvalidValue;
  const int64_t tiles = ((args.rows + args.tiles.rows - 1) / args.tiles.rows) *
                        ((args.cols + args.tiles.cols - 1) / args.tiles.cols);
  // Sequences on x (up to 2^31 - 1 blocks), output tiles on y (up to 65535).
  const dim3 grid(static_cast<unsigned>(args.batch), static_cast<unsigned>(tiles));
  if constexpr (!std::is_same<T, double>::value) {
    if (args.tiles.tensor_cores) {
      if (args.tiles.rows == 128) {
        ragged_outer_bmm_mma_kernel<T, 128><<<grid, kMmaThreads, 0, stream>>>(args);
      } else {
        ragged_outer_bmm_mma_kernel<T, 64><<<grid, kMmaThreads, 0, stream>>>(args);
      }
      return cudaGetLastError();
    }
  }
  if constexpr (!kHalfPrecision<T>) ragged_outer_bmm_simt_kernel<T, A><<<grid, kSimtThreads, 0, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_grouped_linear(ElementType type, const GroupedLinearArgs& args, cudaStream_t stream) {
  return with_element_type(type, [&](auto storage, auto accumulate) {
    return grouped_linear<decltype(storage), decltype(accumulate)>(args, stream);
  });
}

cudaError_t launch_ragged_outer_bmm(ElementType type, const OuterBmmArgs& args, cudaStream_t stream) {
  return with_element_type(type, [&](auto storage, auto accumulate) {
    return outer_bmm<decltype(storage), decltype(accumulate)>(args, stream);
  });
}

}  // namespace cuda
}  // namespace padkern
