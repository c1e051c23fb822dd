// The main loop shared by padkern's CUDA grouped matmuls: one block computes a
// kTileRows x kTileCols tile of C = A @ B over a K of any length, reading A and B
// through loader functors (so callers map rows to a sequence's tokens, apply strides
// and bounds), and leaves C in shared memory in the accumulation type for the
// caller's epilogue. float/double use a SIMT path (no TF32: exact fp32 products);
// half/bfloat16 use tensor cores (WMMA 16x16x16, fp32 accumulation).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <type_traits>

#include "padkern/linear_kernels.h"
#include "recurrence_launch.cuh"  // to_acc / from_acc

namespace padkern {
namespace cuda {

constexpr int kGemmThreads = 256;
constexpr int kCPad = 4;       // keeps rows of the C tile off one bank
constexpr int kSimtDepth = 8;  // K per SIMT stage: keeps fp64 tiles under 48 KB
constexpr int kMmaDepth = 32;  // K per tensor-core stage

template <typename T>
constexpr bool kUsesTensorCores = std::is_same<T, __half>::value || std::is_same<T, __nv_bfloat16>::value;

template <typename A>
using CTile = A[kTileRows][kTileCols + kCPad];

// SIMT: 16 x 16 threads, each accumulating a 4 x 4 micro-tile strided by 16.
template <typename T, typename A, typename LoadA, typename LoadB>
__device__ void simt_tile_gemm(const LoadA& load_a, const LoadB& load_b, int64_t depth, CTile<A>& c_tile) {
  __shared__ A a_tile[kSimtDepth][kTileRows + kCPad];  // transposed: a_tile[k][row]
  __shared__ A b_tile[kSimtDepth][kTileCols + kCPad];
  A acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = A(0);
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  for (int64_t k0 = 0; k0 < depth; k0 += kSimtDepth) {
    for (int i = threadIdx.x; i < kTileRows * kSimtDepth; i += kGemmThreads) {
      a_tile[i % kSimtDepth][i / kSimtDepth] = to_acc<A>(load_a(i / kSimtDepth, k0 + i % kSimtDepth));
    }
    for (int i = threadIdx.x; i < kSimtDepth * kTileCols; i += kGemmThreads) {
      b_tile[i / kTileCols][i % kTileCols] = to_acc<A>(load_b(k0 + i / kTileCols, i % kTileCols));
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kSimtDepth; ++k) {
      A a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        a[i] = a_tile[k][ty + 16 * i];
        b[i] = b_tile[k][tx + 16 * i];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) c_tile[ty + 16 * i][tx + 16 * j] = acc[i][j];
  __syncthreads();
}

// Tensor cores: 8 warps as 2 x 4, each owning a 32 x 16 slab (two 16 x 16 fragments).
template <typename T, typename LoadA, typename LoadB>
__device__ void mma_tile_gemm(const LoadA& load_a, const LoadB& load_b, int64_t depth, CTile<float>& c_tile) {
  using namespace nvcuda;
  // Leading dimensions are multiples of 8 halves and fragment origins 32-byte aligned, as WMMA requires.
  __shared__ __align__(32) T a_tile[kTileRows][kMmaDepth + 8];
  __shared__ __align__(32) T b_tile[kMmaDepth][kTileCols + 8];
  const int warp = threadIdx.x / 32, warp_row = (warp / 4) * 32, warp_col = (warp % 4) * 16;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2];
  wmma::fill_fragment(acc[0], 0.0f);
  wmma::fill_fragment(acc[1], 0.0f);
  for (int64_t k0 = 0; k0 < depth; k0 += kMmaDepth) {
    for (int i = threadIdx.x; i < kTileRows * kMmaDepth; i += kGemmThreads) {
      a_tile[i / kMmaDepth][i % kMmaDepth] = load_a(i / kMmaDepth, k0 + i % kMmaDepth);
    }
    for (int i = threadIdx.x; i < kMmaDepth * kTileCols; i += kGemmThreads) {
      b_tile[i / kTileCols][i % kTileCols] = load_b(k0 + i / kTileCols, i % kTileCols);
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kMmaDepth; k += 16) {
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b_frag;
      wmma::load_matrix_sync(b_frag, &b_tile[k][warp_col], kTileCols + 8);
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a_frag;
        wmma::load_matrix_sync(a_frag, &a_tile[warp_row + 16 * i][k], kMmaDepth + 8);
        wmma::mma_sync(acc[i], a_frag, b_frag, acc[i]);
      }
    }
    __syncthreads();
  }
  for (int i = 0; i < 2; ++i) {
    wmma::store_matrix_sync(&c_tile[warp_row + 16 * i][warp_col], acc[i], kTileCols + kCPad, wmma::mem_row_major);
  }
  __syncthreads();
}

// C tile of `depth`-long dot products, whichever path the element type takes.
template <typename T, typename A, typename LoadA, typename LoadB>
__device__ void tile_gemm(const LoadA& load_a, const LoadB& load_b, int64_t depth, CTile<A>& c_tile) {
  if constexpr (kUsesTensorCores<T>) {
    mma_tile_gemm<T>(load_a, load_b, depth, c_tile);
  } else {
    simt_tile_gemm<T, A>(load_a, load_b, depth, c_tile);
  }
}

}  // namespace cuda
}  // namespace padkern
