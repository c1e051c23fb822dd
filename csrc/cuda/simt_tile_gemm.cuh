// The SIMT main loop of padkern's CUDA grouped matmuls, for the element types
// tensor cores do not take exactly: double, and float when torch does not allow TF32.
// One block computes a kSimtTileRows x kSimtTileCols tile of C = A @ B over a K of any
// length, reading A and B through loader functors (callers map rows to a sequence's
// tokens, apply strides and bounds), and leaves C in shared memory in the accumulation
// type for the caller's epilogue. Half, bfloat16 and TF32 go to mma_pipeline.cuh.
#pragma once

#include "padkern/linear_kernels.h"
#include "recurrence_launch.cuh"  // to_acc / from_acc

namespace padkern {
namespace cuda {

constexpr int kSimtThreads = 256;
constexpr int kCPad = 4;       // keeps rows of the C tile off one bank
constexpr int kSimtDepth = 8;  // K per SIMT stage: keeps fp64 tiles under 48 KB

template <typename A>
using CTile = A[kSimtTileRows][kSimtTileCols + kCPad];

// SIMT: 16 x 16 threads, each accumulating a 4 x 4 micro-tile strided by 16.
template <typename T, typename A, typename LoadA, typename LoadB>
__device__ void simt_tile_gemm(const LoadA& load_a, const LoadB& load_b, int64_t depth, CTile<A>& c_tile) {
  __shared__ A a_tile[kSimtDepth][kSimtTileRows + kCPad];  // transposed: a_tile[k][row]
  __shared__ A b_tile[kSimtDepth][kSimtTileCols + kCPad];
  A acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = A(0);
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  for (int64_t k0 = 0; k0 < depth; k0 += kSimtDepth) {
    for (int i = threadIdx.x; i < kSimtTileRows * kSimtDepth; i += kSimtThreads) {
      a_tile[i % kSimtDepth][i / kSimtDepth] = to_acc<A>(load_a(i / kSimtDepth, k0 + i % kSimtDepth));
    }
    for (int i = threadIdx.x; i < kSimtDepth * kSimtTileCols; i += kSimtThreads) {
      b_tile[i / kSimtTileCols][i % kSimtTileCols] = to_acc<A>(load_b(k0 + i / kSimtTileCols, i % kSimtTileCols));
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

}  // namespace cuda
}  // namespace padkern
