// Tensor-core main loop of padkern's CUDA matmuls (grouped_linear, ragged_outer_bmm):
// one block of 8 warps computes a TileRows x 128 tile of C = A @ B^T, where A is
// [rows, K] and B is [cols, K], both read K-contiguous into shared memory.
//
// - Copies: 16-byte cp.async (zero-filled past the rows and K) into a 3-stage ring, so
//   the copies of the next two K-slices overlap the MMAs of the current one. Operands
//   that are not K-contiguous and 16-byte aligned (views, K not a multiple of the 16-byte
//   chunk, per-sequence [B, K, N] weights, x^T in an outer product) are loaded element by
//   element into registers before the current slice's MMAs and stored into the same
//   layout after them.
// - Layout and fragment addressing: padkern/mma_tile_layout.h (swizzled, so ldmatrix
//   is bank-conflict free; checked on the CPU against the PTX fragment definitions).
// - Maths: ldmatrix.x4 + mma.sync m16n8k16 (f16, bf16) or m16n8k8 (tf32, for float
//   when torch allows TF32), fp32 accumulation in registers. Warps are 2 x 4 over the
//   tile; each owns (TileRows / 2) x 32.
// - Epilogue: the caller's functor gets (row, col, value at col, value at col + 1) for
//   every accumulator pair, straight from registers (no shared-memory C tile), and does
//   its own bounds checks.
//
// Only the copies, the barrier and the three instructions are GPU-only; the index maths
// they use lives in mma_tile_layout.h.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "padkern/linear_kernels.h"  // kMmaTileCols
#include "padkern/mma_tile_layout.h"
#include "recurrence_launch.cuh"  // from_acc

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#error "padkern's CUDA matmuls need sm_80 or newer (cp.async, mma.sync m16n8k16); set PADKERN_CUDA_ARCHS"
#endif

namespace padkern {
namespace cuda {

constexpr int kMmaThreads = 256;
// 3 x (128 + 128) rows x 64 bytes = 48 KB, the most static shared memory a block may
// declare: a fourth stage would need the dynamic opt-in.
constexpr int kMmaStages = 3;

template <int TileRows>
struct MmaTile {
  static_assert(TileRows == 64 || TileRows == 128, "tile rows");
  static constexpr int kRows = TileRows, kCols = kMmaTileCols;
  static constexpr int kWarpRows = TileRows / 2, kWarpCols = kMmaTileCols / 4;
  static constexpr int kFragRows = kWarpRows / 16;  // m16 blocks per warp
  static constexpr int kFragCols = kWarpCols / 8;   // n8 blocks per warp
  static constexpr int kStageBytes = (kRows + kCols) * mma::kRowBytes;
};

// Element (row, k) at base[row * row_stride + k * k_stride]; rows from `rows` on and k
// from the depth on read as zero. `vectorized`: k_stride == 1 and every 8-halves /
// 4-floats chunk is 16-byte aligned and wholly inside or outside K (decided on the host).
template <typename T>
struct MmaOperand {
  const T* base;
  int64_t row_stride, k_stride, rows;
  bool vectorized;
};

__device__ __forceinline__ unsigned shared_address(const void* pointer) {
  return static_cast<unsigned>(__cvta_generic_to_shared(pointer));
}

// Copies 16 bytes, or zero-fills them when src_bytes is 0 (nothing is read then).
__device__ __forceinline__ void cp_async_16(void* shared, const void* global, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(shared)), "l"(global),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int Pending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending) : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&regs)[4], const void* shared) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(regs[0]), "=r"(regs[1]), "=r"(regs[2]), "=r"(regs[3])
               : "r"(shared_address(shared))
               : "memory");
}

// Round to nearest (ties away from zero): mma.sync alone would truncate the mantissa.
__device__ __forceinline__ uint32_t to_tf32(uint32_t bits) {
  uint32_t rounded;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(rounded) : "f"(__uint_as_float(bits)));
  return rounded;
}

// d += a @ b for one m16 x n8 block and one k-step (tf32 operands already rounded).
template <typename T>
__device__ __forceinline__ void mma_step(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same<T, __half>::value) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    static_assert(std::is_same<T, float>::value, "tensor-core element types: half, bfloat16, float (as tf32)");
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

template <typename T>
__device__ __forceinline__ void round_to_tf32_if_float(uint32_t (&regs)[4]) {
  if constexpr (std::is_same<T, float>::value) {
#pragma unroll
    for (int i = 0; i < 4; ++i) regs[i] = to_tf32(regs[i]);
  }
}

// One operand's part of a stage: `Rows` rows x the K-slice [k0, k0 + 64 bytes). A
// vectorized operand goes by cp.async (issue() does everything). Any other operand is
// loaded into registers by issue(), right after the barrier, and written to shared
// memory by finish(), after the current slice's MMAs: the global latency overlaps them.
template <typename T, int Rows>
struct SliceCopy {
  static constexpr int kElems = mma::kChunkBytes / static_cast<int>(sizeof(T));
  static constexpr int kChunks = Rows * mma::kChunksPerRow / kMmaThreads;  // per thread: 1 or 2
  static_assert(Rows * mma::kChunksPerRow % kMmaThreads == 0, "whole chunks per thread");
  union Chunk {
    uint4 bits;
    T elements[kElems];
  };
  Chunk staged[kChunks];

  __device__ __forceinline__ mma::RowChunk target(const MmaOperand<T>& src, int c) const {
    return mma::copy_target(threadIdx.x + c * kMmaThreads, Rows, !src.vectorized && src.row_stride == 1);
  }

  __device__ __forceinline__ void issue(const MmaOperand<T>& src, int64_t depth, int64_t k0, unsigned char* tile) {
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const mma::RowChunk at = target(src, c);
      const int64_t k = k0 + at.chunk * kElems;
      const bool row_inside = at.row < src.rows;
      if (src.vectorized) {
        const bool inside = row_inside && k < depth;
        cp_async_16(tile + mma::chunk_offset(at.row, at.chunk), inside ? src.base + at.row * src.row_stride + k : src.base,
                    inside ? mma::kChunkBytes : 0);
      } else {
#pragma unroll
        for (int e = 0; e < kElems; ++e) {
          staged[c].elements[e] = (row_inside && k + e < depth)
                                      ? src.base[at.row * src.row_stride + (k + e) * src.k_stride]
                                      : from_acc<T>(0.0f);
        }
      }
    }
  }

  __device__ __forceinline__ void finish(const MmaOperand<T>& src, unsigned char* tile) const {
    if (src.vectorized) return;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const mma::RowChunk at = target(src, c);
      *reinterpret_cast<uint4*>(tile + mma::chunk_offset(at.row, at.chunk)) = staged[c].bits;
    }
  }
};

// The epilogue receives each accumulator pair (columns col and col + 1 of one row).
template <typename T, int TileRows, typename Epilogue>
__device__ __forceinline__ void mma_tile_gemm(const MmaOperand<T>& a, const MmaOperand<T>& b, int64_t depth,
                                              const Epilogue& epilogue) {
  using Tile = MmaTile<TileRows>;
  __shared__ __align__(128) unsigned char stages[kMmaStages][Tile::kStageBytes];
  constexpr int64_t kSliceDepth = mma::kRowBytes / sizeof(T);  // K per stage: 32 halves or 16 floats
  constexpr int kBOffset = Tile::kRows * mma::kRowBytes;
  const int64_t slices = (depth + kSliceDepth - 1) / kSliceDepth;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int warp_row = (warp / 4) * Tile::kWarpRows, warp_col = (warp % 4) * Tile::kWarpCols;
  float acc[Tile::kFragRows][Tile::kFragCols][4] = {};
  SliceCopy<T, Tile::kRows> copy_a;
  SliceCopy<T, Tile::kCols> copy_b;

  // Every thread commits one group per slice, empty or not, so wait_group counts alike everywhere.
  for (int s = 0; s < kMmaStages - 1; ++s) {
    if (s < slices) {
      copy_a.issue(a, depth, s * kSliceDepth, stages[s]);
      copy_b.issue(b, depth, s * kSliceDepth, stages[s] + kBOffset);
      copy_a.finish(a, stages[s]);
      copy_b.finish(b, stages[s] + kBOffset);
    }
    cp_async_commit();
  }
  int stage = 0, refill = kMmaStages - 1;  // slice % kMmaStages and (slice + kMmaStages - 1) % kMmaStages
  for (int64_t slice = 0; slice < slices; ++slice) {
    cp_async_wait<kMmaStages - 2>();
    // Slice `slice` is now visible to every thread, and every warp has finished the MMAs
    // of slice - 1, whose stage (`refill`) is copied into from here until the next barrier.
    __syncthreads();
    const int64_t next = slice + kMmaStages - 1;
    if (next < slices) {
      copy_a.issue(a, depth, next * kSliceDepth, stages[refill]);
      copy_b.issue(b, depth, next * kSliceDepth, stages[refill] + kBOffset);
    }
    cp_async_commit();
    const unsigned char* a_tile = stages[stage];
    const unsigned char* b_tile = a_tile + kBOffset;
#pragma unroll
    for (int step = 0; step < mma::kStepsPerStage; ++step) {
      uint32_t a_frag[Tile::kFragRows][4], b_frag[Tile::kFragCols / 2][4];
#pragma unroll
      for (int i = 0; i < Tile::kFragRows; ++i) {
        const mma::RowChunk src = mma::a_fragment_source(lane, warp_row + 16 * i, step);
        ldmatrix_x4(a_frag[i], a_tile + mma::chunk_offset(src.row, src.chunk));
        round_to_tf32_if_float<T>(a_frag[i]);
      }
#pragma unroll
      for (int j = 0; j < Tile::kFragCols / 2; ++j) {
        const mma::RowChunk src = mma::b_fragment_source(lane, warp_col + 16 * j, step);
        ldmatrix_x4(b_frag[j], b_tile + mma::chunk_offset(src.row, src.chunk));
        round_to_tf32_if_float<T>(b_frag[j]);
      }
#pragma unroll
      for (int i = 0; i < Tile::kFragRows; ++i)
#pragma unroll
        for (int j = 0; j < Tile::kFragCols; ++j)
          mma_step<T>(acc[i][j], a_frag[i], b_frag[j / 2][2 * (j % 2)], b_frag[j / 2][2 * (j % 2) + 1]);
    }
    if (next < slices) {
      copy_a.finish(a, stages[refill]);
      copy_b.finish(b, stages[refill] + kBOffset);
    }
    stage = stage + 1 == kMmaStages ? 0 : stage + 1;
    refill = refill + 1 == kMmaStages ? 0 : refill + 1;
  }
  cp_async_wait<0>();  // only empty groups can be pending here; leave none behind
#pragma unroll
  for (int i = 0; i < Tile::kFragRows; ++i)
#pragma unroll
    for (int j = 0; j < Tile::kFragCols; ++j)
#pragma unroll
      for (int half = 0; half < 2; ++half)  // c0 c1, then c2 c3 eight rows below
        epilogue(warp_row + 16 * i + mma::accumulator_row(lane, 2 * half),
                 warp_col + 8 * j + mma::accumulator_col(lane, 2 * half), acc[i][j][2 * half], acc[i][j][2 * half + 1]);
}

}  // namespace cuda
}  // namespace padkern
