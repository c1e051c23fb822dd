// Tensor-core main loop of padkern's CUDA matmuls (grouped_linear, ragged_outer_bmm):
// one block of 8 warps computes a TileRows x 128 tile of C = A @ B^T, where A is
// [rows, K] and B is [cols, K], both read K-contiguous into shared memory.
//
// - Copies: 16-byte cp.async (zero-filled past the rows and K) into a 3-stage ring, so
//   the copies of the next two K-slices overlap the MMAs of the current one. Operands
//   that are not K-contiguous and 16-byte aligned (views, odd K, x^T in an outer
//   product) are copied element by element into the same layout, synchronously.
// - Layout and fragment addressing: padkern/mma_tile_layout.h (swizzled, so ldmatrix
//   is bank-conflict free; checked on the CPU against the PTX fragment definitions).
// - Maths: ldmatrix.x4 + mma.sync m16n8k16 (f16, bf16) or m16n8k8 (tf32, for float
//   when torch allows TF32), fp32 accumulation in registers. Warps are 2 x 4 over the
//   tile; each owns (TileRows / 2) x 32.
// - Epilogue: the caller's functor gets (row, col, value) for every accumulator, straight
//   from registers (no shared-memory C tile), and does its own bounds checks.
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

// Round to nearest (ties away), as cuBLAS does; mma.sync alone would truncate the mantissa.
__device__ __forceinline__ uint32_t to_tf32(uint32_t bits) {
  uint32_t rounded;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(rounded) : "f"(__uint_as_float(bits)));
  return rounded;
}

// d += a @ b for one m16 x n8 block and one k-step.
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
                 : "r"(to_tf32(a[0])), "r"(to_tf32(a[1])), "r"(to_tf32(a[2])), "r"(to_tf32(a[3])), "r"(to_tf32(b0)),
                   "r"(to_tf32(b1)));
  }
}

// Fills one operand's part of a stage: `Rows` rows x K-slice [k0, k0 + 64 bytes).
template <typename T, int Rows>
__device__ __forceinline__ void copy_operand_slice(const MmaOperand<T>& src, int64_t depth, int64_t k0,
                                                   unsigned char* tile) {
  constexpr int kElems = mma::kChunkBytes / static_cast<int>(sizeof(T));
  const bool rows_adjacent = !src.vectorized && src.row_stride == 1;
  for (int i = threadIdx.x; i < Rows * mma::kChunksPerRow; i += kMmaThreads) {
    const mma::RowChunk at = mma::copy_target(i, Rows, rows_adjacent);
    const int64_t k = k0 + at.chunk * kElems;
    const bool row_inside = at.row < src.rows;
    unsigned char* dst = tile + mma::chunk_offset(at.row, at.chunk);
    if (src.vectorized) {
      const bool inside = row_inside && k < depth;
      cp_async_16(dst, inside ? src.base + at.row * src.row_stride + k : src.base, inside ? mma::kChunkBytes : 0);
    } else {
      union {
        uint4 bits;
        T elements[kElems];
      } chunk;
#pragma unroll
      for (int e = 0; e < kElems; ++e) {
        chunk.elements[e] = (row_inside && k + e < depth) ? src.base[at.row * src.row_stride + (k + e) * src.k_stride]
                                                          : from_acc<T>(0.0f);
      }
      *reinterpret_cast<uint4*>(dst) = chunk.bits;
    }
  }
}

template <typename T, int TileRows, typename Epilogue>
__device__ __forceinline__ void mma_tile_gemm(const MmaOperand<T>& a, const MmaOperand<T>& b, int64_t depth,
                                              const Epilogue& epilogue) {
  using Tile = MmaTile<TileRows>;
  __shared__ __align__(128) unsigned char stages[kMmaStages][Tile::kStageBytes];
  constexpr int64_t kSliceDepth = mma::kRowBytes / sizeof(T);  // K per stage: 32 halves or 16 floats
  const int64_t slices = (depth + kSliceDepth - 1) / kSliceDepth;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int warp_row = (warp / 4) * Tile::kWarpRows, warp_col = (warp % 4) * Tile::kWarpCols;
  float acc[Tile::kFragRows][Tile::kFragCols][4] = {};

  auto copy_slice = [&](int64_t slice) {
    unsigned char* a_tile = stages[slice % kMmaStages];
    copy_operand_slice<T, Tile::kRows>(a, depth, slice * kSliceDepth, a_tile);
    copy_operand_slice<T, Tile::kCols>(b, depth, slice * kSliceDepth, a_tile + Tile::kRows * mma::kRowBytes);
  };
  // Every thread commits one group per slice, empty or not, so wait_group counts alike everywhere.
  for (int s = 0; s < kMmaStages - 1; ++s) {
    if (s < slices) copy_slice(s);
    cp_async_commit();
  }
  for (int64_t slice = 0; slice < slices; ++slice) {
    cp_async_wait<kMmaStages - 2>();
    // Slice `slice` is now visible to every thread, and every warp has finished the MMAs
    // of slice - 1, whose stage the copy below refills.
    __syncthreads();
    if (slice + kMmaStages - 1 < slices) copy_slice(slice + kMmaStages - 1);
    cp_async_commit();
    const unsigned char* a_tile = stages[slice % kMmaStages];
    const unsigned char* b_tile = a_tile + Tile::kRows * mma::kRowBytes;
#pragma unroll
    for (int step = 0; step < mma::kStepsPerStage; ++step) {
      uint32_t a_frag[Tile::kFragRows][4], b_frag[Tile::kFragCols / 2][4];
#pragma unroll
      for (int i = 0; i < Tile::kFragRows; ++i) {
        const mma::RowChunk src = mma::a_fragment_source(lane, warp_row + 16 * i, step);
        ldmatrix_x4(a_frag[i], a_tile + mma::chunk_offset(src.row, src.chunk));
      }
#pragma unroll
      for (int j = 0; j < Tile::kFragCols / 2; ++j) {
        const mma::RowChunk src = mma::b_fragment_source(lane, warp_col + 16 * j, step);
        ldmatrix_x4(b_frag[j], b_tile + mma::chunk_offset(src.row, src.chunk));
      }
#pragma unroll
      for (int i = 0; i < Tile::kFragRows; ++i)
#pragma unroll
        for (int j = 0; j < Tile::kFragCols; ++j)
          mma_step<T>(acc[i][j], a_frag[i], b_frag[j / 2][2 * (j % 2)], b_frag[j / 2][2 * (j % 2) + 1]);
    }
  }
  cp_async_wait<0>();  // only empty groups can be pending here; leave none behind
#pragma unroll
  for (int i = 0; i < Tile::kFragRows; ++i)
#pragma unroll
    for (int j = 0; j < Tile::kFragCols; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r)
        epilogue(warp_row + 16 * i + mma::accumulator_row(lane, r), warp_col + 8 * j + mma::accumulator_col(lane, r),
                 acc[i][j][r]);
}

}  // namespace cuda
}  // namespace padkern
