// Shared-memory layout and fragment addressing of the tensor-core main loop
// (csrc/cuda/mma_pipeline.cuh), as plain index arithmetic: the CPU test
// (tests/cpp/kernel_index_maths_test.cpp) checks it against the PTX ISA's fragment
// definitions of ldmatrix and mma.sync, so the maths is verified before a GPU runs it.
//
// A stage holds each operand as `rows` x 64 bytes, K-contiguous: four 16-byte chunks
// per row (8 halves or 4 floats). One mma k-step consumes two chunks (k16 for
// f16/bf16 with m16n8k16, k8 for tf32 with m16n8k8), so one set of addresses serves
// all three element types: ldmatrix moves 16-byte rows, and a 32-bit tf32 element is
// simply a pair of its b16 halves.
#pragma once
#include "padkern/ragged_layout.h"  // PADKERN_HOST_DEVICE

namespace padkern {
namespace mma {

constexpr int kChunkBytes = 16;
constexpr int kChunksPerRow = 4;
constexpr int kRowBytes = kChunkBytes * kChunksPerRow;
constexpr int kChunksPerStep = 2;                        // one mma k-step
constexpr int kStepsPerStage = kChunksPerRow / kChunksPerStep;

// Each 8-lane phase of an ldmatrix reads 8 consecutive rows (an aligned group of 8) at
// one logical chunk. Unswizzled, rows r and r + 2 sit 128 bytes apart, on the same
// banks: a 4-way conflict. XOR-ing the chunk with bits 1..2 of the row gives the 8 rows
// of every aligned group 8 distinct 16-byte bank groups ((row & 1) picks the half of
// the 128-byte line, the XOR the quarter within it).
PADKERN_HOST_DEVICE int swizzled_chunk(int row, int chunk) { return chunk ^ ((row >> 1) & 3); }

// Byte offset of (row, chunk) within an operand tile of a stage.
PADKERN_HOST_DEVICE int chunk_offset(int row, int chunk) {
  return row * kRowBytes + swizzled_chunk(row, chunk) * kChunkBytes;
}

struct RowChunk {
  int row, chunk;
};

// The row and chunk whose address `lane` gives ldmatrix.x4 for the A fragment of rows
// [row0, row0 + 16) at k-step `step`. Lanes 8j..8j+7 address matrix j, and register j
// of every lane receives matrix j: matrices (rows 0-7, chunk 0), (rows 8-15, chunk 0),
// (rows 0-7, chunk 1), (rows 8-15, chunk 1) are a0a1, a2a3, a4a5, a6a7 of m16n8k16
// (and a0, a1, a2, a3 of the tf32 m16n8k8).
PADKERN_HOST_DEVICE RowChunk a_fragment_source(int lane, int row0, int step) {
  return {row0 + lane % 8 + 8 * ((lane / 8) % 2), step * kChunksPerStep + lane / 16};
}

// The same for the B fragments of two n8 blocks, columns [col0, col0 + 16), stored as
// rows of the B tile (B is held [n][k], K-contiguous): registers 0, 1 are b0b1, b2b3 of
// block col0 and registers 2, 3 those of block col0 + 8.
PADKERN_HOST_DEVICE RowChunk b_fragment_source(int lane, int col0, int step) {
  return {col0 + lane % 8 + 8 * (lane / 16), step * kChunksPerStep + (lane / 8) % 2};
}

// Accumulator register r (0..3) of lane within an m16n8 block: c0 c1 on row lane/4,
// c2 c3 eight rows below, at columns 2 * (lane % 4) and the next.
PADKERN_HOST_DEVICE int accumulator_row(int lane, int r) { return lane / 4 + 8 * (r / 2); }
PADKERN_HOST_DEVICE int accumulator_col(int lane, int r) { return 2 * (lane % 4) + r % 2; }

// Which (row, chunk) of a `rows` x 4-chunk operand tile the i-th copy of a stage fills.
// K-contiguous sources go chunk-fastest (a warp reads 8 rows of 64 contiguous bytes);
// sources whose rows are adjacent in memory (row stride 1, e.g. x^T in an outer
// product) go row-fastest, so each element load of a warp reads consecutive rows.
PADKERN_HOST_DEVICE RowChunk copy_target(int i, int rows, bool rows_adjacent) {
  return rows_adjacent ? RowChunk{i % rows, i / rows} : RowChunk{i / kChunksPerRow, i % kChunksPerRow};
}

}  // namespace mma
}  // namespace padkern
