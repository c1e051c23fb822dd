// CUDA grouped matmuls over ragged batches (see tile_gemm.cuh for the main loop).
//
// grouped_linear: block (x = row tile, y = column tile). Row tiles come from a prefix
// over per-sequence tile counts (tile_starts, built on the device): a block finds its
// sequence by binary search, reads that sequence's real rows straight from the padded
// or ragged input (never a packed copy) and writes straight into the output layout,
// with bias and activation fused into the epilogue. Blocks past the last tile exit.
//
// ragged_outer_bmm: block (x = sequence, y = output tile) reduces over that sequence's
// rows: out[b] = x_b^T @ y_b.
#include "padkern/ragged_layout.h"
#include "padkern/scalar_math.h"
#include "tile_gemm.cuh"

namespace padkern {
namespace cuda {
namespace {

template <typename T, typename A, int Act>
__global__ void __launch_bounds__(kGemmThreads) grouped_linear_kernel(GroupedLinearArgs args) {
  __shared__ __align__(32) CTile<A> c_tile;
  const int64_t tile = blockIdx.x;
  if (tile >= args.tile_starts[args.batch]) return;  // the whole block leaves together
  const int64_t b = sequence_of_token(args.tile_starts, args.batch, tile);
  // Padded input: rows [0, length) of sequence b (bos unused); ragged: rows [bos, bos + length).
  const SequenceSpan span = args.padded ? SequenceSpan{0, padded_length_of(args.offsets, b, args.row_limit)}
                                        : sequence_span(args.offsets, b, args.row_limit);
  const int64_t bos = span.bos, length = span.length();
  const int64_t row0 = (tile - args.tile_starts[b]) * kTileRows, col0 = int64_t{blockIdx.y} * kTileCols;
  if (row0 < 0 || row0 >= length) return;  // uniform across the block, before any barrier
  const T* input = static_cast<const T*>(args.input);
  const T* weight = static_cast<const T*>(args.weight) + b * args.w_stride_b;
  const T zero = from_acc<T>(A(0));
  auto input_row = [&](int64_t row) { return args.padded ? b * args.in_stride_b + row * args.in_stride_t
                                                          : (bos + row) * args.in_stride_t; };
  auto output_row = [&](int64_t row) { return args.padded ? b * args.out_stride_b + row * args.out_stride_t
                                                           : (bos + row) * args.out_stride_t; };
  auto load_a = [&](int r, int64_t k) -> T {
    const int64_t row = row0 + r;
    return (row < length && k < args.features_in) ? input[input_row(row) + k * args.in_stride_k] : zero;
  };
  auto load_b = [&](int64_t k, int c) -> T {
    const int64_t col = col0 + c;
    return (k < args.features_in && col < args.features_out) ? weight[k * args.w_stride_k + col * args.w_stride_n]
                                                             : zero;
  };
  tile_gemm<T, A>(load_a, load_b, args.features_in, c_tile);

  const T* bias = static_cast<const T*>(args.bias);
  T* output = static_cast<T*>(args.output);
  T* preactivation = static_cast<T*>(args.preactivation);
  for (int i = threadIdx.x; i < kTileRows * kTileCols; i += kGemmThreads) {
    const int64_t row = row0 + i / kTileCols, col = col0 + i % kTileCols;
    if (row >= length || col >= args.features_out) continue;
    const A z = c_tile[i / kTileCols][i % kTileCols] + (bias != nullptr ? to_acc<A>(bias[col]) : A(0));
    const int64_t at = output_row(row) + col;
    if (preactivation != nullptr) preactivation[at] = from_acc<T>(z);
    output[at] = from_acc<T>(activate<Act, A>(z));
  }
}

template <typename T, typename A>
__global__ void __launch_bounds__(kGemmThreads) ragged_outer_bmm_kernel(OuterBmmArgs args) {
  __shared__ __align__(32) CTile<A> c_tile;
  const int64_t col_tiles = (args.cols + kTileCols - 1) / kTileCols;
  const int64_t row0 = (blockIdx.y / col_tiles) * kTileRows, col0 = (blockIdx.y % col_tiles) * kTileCols;
  const int64_t b = blockIdx.x;
  const SequenceSpan span = sequence_span(args.offsets, b, args.tokens);
  const int64_t bos = span.bos, length = span.length();
  const T* x = static_cast<const T*>(args.x) + bos * args.rows;
  const T* y = static_cast<const T*>(args.y) + bos * args.cols;
  const T zero = from_acc<T>(A(0));
  // A = x_b^T: A[r][t] = x[t][row0 + r]; B = y_b: B[t][c] = y[t][col0 + c]; K = the sequence's length.
  auto load_a = [&](int r, int64_t t) -> T {
    return (t < length && row0 + r < args.rows) ? x[t * args.rows + row0 + r] : zero;
  };
  auto load_b = [&](int64_t t, int c) -> T {
    return (t < length && col0 + c < args.cols) ? y[t * args.cols + col0 + c] : zero;
  };
  tile_gemm<T, A>(load_a, load_b, length, c_tile);
  T* out = static_cast<T*>(args.output) + b * args.rows * args.cols;
  for (int i = threadIdx.x; i < kTileRows * kTileCols; i += kGemmThreads) {
    const int64_t row = row0 + i / kTileCols, col = col0 + i % kTileCols;
    if (row < args.rows && col < args.cols) out[row * args.cols + col] = from_acc<T>(c_tile[i / kTileCols][i % kTileCols]);
  }
}

template <typename T, typename A>
cudaError_t grouped_linear(const GroupedLinearArgs& args, cudaStream_t stream) {
  if (args.batch == 0 || args.features_out == 0 || args.row_tiles == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(args.row_tiles),
                  static_cast<unsigned>((args.features_out + kTileCols - 1) / kTileCols));
  switch (args.activation) {
    case kRelu: grouped_linear_kernel<T, A, kRelu><<<grid, kGemmThreads, 0, stream>>>(args); break;
    case kGelu: grouped_linear_kernel<T, A, kGelu><<<grid, kGemmThreads, 0, stream>>>(args); break;
    case kSilu: grouped_linear_kernel<T, A, kSilu><<<grid, kGemmThreads, 0, stream>>>(args); break;
    default: grouped_linear_kernel<T, A, kIdentity><<<grid, kGemmThreads, 0, stream>>>(args);
  }
  return cudaGetLastError();
}

template <typename T, typename A>
cudaError_t outer_bmm(const OuterBmmArgs& args, cudaStream_t stream) {
  if (args.batch == 0 || args.rows == 0 || args.cols == 0) return cudaSuccess;
  const int64_t tiles = ((args.rows + kTileRows - 1) / kTileRows) * ((args.cols + kTileCols - 1) / kTileCols);
  // Sequences on x (up to 2^31 - 1 blocks), output tiles on y (up to 65535).
  const dim3 grid(static_cast<unsigned>(args.batch), static_cast<unsigned>(tiles));
  ragged_outer_bmm_kernel<T, A><<<grid, kGemmThreads, 0, stream>>>(args);
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
