// Checks csrc/include/padkern/mma_tile_layout.h against the PTX ISA's definitions of
// ldmatrix (.x4, b16, no .trans) and of the mma.sync fragments (m16n8k16 f16/bf16,
// m16n8k8 tf32), by simulating a warp on a byte image of one shared-memory stage.
// Every element carries its own (row, k) as its value, so each register a lane would
// receive is decoded and compared with the coordinates PTX assigns to it.
// Also checks the grouped block order of padkern/tile_order.h and the index maths of the
// persistent recurrences (padkern/persistent_rnn_plan.h).
// Built and run by tests/test_kernel_index_maths.py; exits non-zero with a message on failure.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <vector>

#include "padkern/mma_tile_layout.h"
#include "padkern/persistent_rnn_plan.h"
#include "padkern/tile_order.h"

using namespace padkern::mma;

namespace {

int failures = 0;

void expect(bool ok, const char* what, int a, int b, int c) {
  if (!ok && failures++ < 20) std::fprintf(stderr, "FAIL %s (%d, %d, %d)\n", what, a, b, c);
}

// A stage image of `rows` x 64 bytes in which element (row, k) holds code(row, k).
// elem_bytes 2 (f16/bf16) or 4 (tf32): the code fits either.
struct Stage {
  int rows, elem_bytes;
  std::vector<uint8_t> bytes;
  Stage(int rows_, int elem_bytes_) : rows(rows_), elem_bytes(elem_bytes_), bytes(rows_ * kRowBytes) {
    const int per_chunk = kChunkBytes / elem_bytes;
    for (int row = 0; row < rows; ++row)
      for (int chunk = 0; chunk < kChunksPerRow; ++chunk)
        for (int e = 0; e < per_chunk; ++e) {
          const uint32_t value = code(row, chunk * per_chunk + e);
          std::memcpy(&bytes[chunk_offset(row, chunk) + e * elem_bytes], &value, elem_bytes);
        }
  }
  static uint32_t code(int row, int k) { return static_cast<uint32_t>(row * 64 + k); }
};

// ldmatrix.x4: lanes 8j..8j+7 give the 16-byte rows of matrix j; register j of lane l
// receives bytes [4 * (l % 4), + 4) of row l / 4 of matrix j.
void ldmatrix_x4(const Stage& s, const int (&row_offset)[32], uint32_t (&regs)[32][4]) {
  for (int lane = 0; lane < 32; ++lane)
    for (int j = 0; j < 4; ++j) std::memcpy(&regs[lane][j], &s.bytes[row_offset[8 * j + lane / 4] + 4 * (lane % 4)], 4);
}

// The (row, k) held by 16-bit half h (0 low, 1 high) of a register, or by a 32-bit register.
void decode(const Stage& s, uint32_t reg, int half, int& row, int& k) {
  const uint32_t value = s.elem_bytes == 2 ? (half == 0 ? reg & 0xffff : reg >> 16) : reg;
  row = static_cast<int>(value / 64);
  k = static_cast<int>(value % 64);
}

void check_a_fragments(int elem_bytes, int tile_rows) {
  const Stage s(tile_rows, elem_bytes);
  const int step_k = kChunksPerStep * kChunkBytes / elem_bytes;  // 16 (f16) or 8 (tf32)
  for (int row0 = 0; row0 < tile_rows; row0 += 16)
    for (int step = 0; step < kStepsPerStage; ++step) {
      int offsets[32];
      for (int lane = 0; lane < 32; ++lane) {
        const RowChunk src = a_fragment_source(lane, row0, step);
        offsets[lane] = chunk_offset(src.row, src.chunk);
      }
      uint32_t regs[32][4];
      ldmatrix_x4(s, offsets, regs);
      for (int lane = 0; lane < 32; ++lane) {
        const int g = lane / 4, t = lane % 4;
        for (int reg = 0; reg < 4; ++reg)
          for (int half = 0; half < (elem_bytes == 2 ? 2 : 1); ++half) {
            int want_row, want_k;
            if (elem_bytes == 2) {  // m16n8k16 a0..a7: a_i in register i / 2, half i % 2
              const int i = 2 * reg + half;
              want_row = g + ((i < 2 || (i >= 4 && i < 6)) ? 0 : 8);
              want_k = 2 * t + (i & 1) + (i >= 4 ? 8 : 0);
            } else {  // m16n8k8 tf32 a0..a3
              want_row = g + ((reg == 0 || reg == 2) ? 0 : 8);
              want_k = t + (reg >= 2 ? 4 : 0);
            }
            int row, k;
            decode(s, regs[lane][reg], half, row, k);
            expect(row == row0 + want_row && k == step * step_k + want_k, "A fragment element", lane, reg, elem_bytes);
          }
      }
    }
}

void check_b_fragments(int elem_bytes, int tile_cols) {
  const Stage s(tile_cols, elem_bytes);
  const int step_k = kChunksPerStep * kChunkBytes / elem_bytes;
  for (int col0 = 0; col0 < tile_cols; col0 += 16)
    for (int step = 0; step < kStepsPerStage; ++step) {
      int offsets[32];
      for (int lane = 0; lane < 32; ++lane) {
        const RowChunk src = b_fragment_source(lane, col0, step);
        offsets[lane] = chunk_offset(src.row, src.chunk);
      }
      uint32_t regs[32][4];
      ldmatrix_x4(s, offsets, regs);
      for (int lane = 0; lane < 32; ++lane) {
        const int g = lane / 4, t = lane % 4;
        for (int reg = 0; reg < 4; ++reg) {
          const int block = reg / 2, which = reg % 2;  // n8 block, fragment register within it
          for (int half = 0; half < (elem_bytes == 2 ? 2 : 1); ++half) {
            // m16n8k16 b0..b3 (k = 2t + (i & 1), + 8 for b2 b3); tf32 b0, b1 (k = t, t + 4); n = g.
            const int want_k = elem_bytes == 2 ? 2 * t + half + 8 * which : t + 4 * which;
            const int want_n = g + 8 * block;
            int n, k;
            decode(s, regs[lane][reg], half, n, k);
            expect(n == col0 + want_n && k == step * step_k + want_k, "B fragment element", lane, reg, elem_bytes);
          }
        }
      }
    }
}

void check_accumulators() {
  for (int lane = 0; lane < 32; ++lane)
    for (int r = 0; r < 4; ++r) {
      // PTX: row = groupID for c0 c1, groupID + 8 for c2 c3; col = 2 * threadID_in_group + (i & 1).
      expect(accumulator_row(lane, r) == lane / 4 + (r >= 2 ? 8 : 0), "accumulator row", lane, r, 0);
      expect(accumulator_col(lane, r) == 2 * (lane % 4) + (r & 1), "accumulator col", lane, r, 0);
    }
}

// Every 8-lane phase of every ldmatrix the main loop issues touches 8 distinct 16-byte
// bank groups (no shared-memory bank conflict).
void check_no_bank_conflicts(int tile_rows) {
  for (int base = 0; base < tile_rows; base += 16)
    for (int step = 0; step < kStepsPerStage; ++step)
      for (int operand = 0; operand < 2; ++operand)
        for (int phase = 0; phase < 4; ++phase) {
          std::set<int> groups;
          for (int lane = 8 * phase; lane < 8 * phase + 8; ++lane) {
            const RowChunk src = operand == 0 ? a_fragment_source(lane, base, step) : b_fragment_source(lane, base, step);
            groups.insert((chunk_offset(src.row, src.chunk) / kChunkBytes) % 8);
          }
          expect(groups.size() == 8, "bank conflict in an ldmatrix phase", base, step, operand);
        }
}

// The swizzle and both copy orders are bijections onto the tile.
void check_bijections(int tile_rows) {
  std::set<int> offsets;
  for (int row = 0; row < tile_rows; ++row)
    for (int chunk = 0; chunk < kChunksPerRow; ++chunk) {
      const int offset = chunk_offset(row, chunk);
      expect(offset % kChunkBytes == 0 && offset >= 0 && offset < tile_rows * kRowBytes, "chunk offset in tile", row, chunk, 0);
      offsets.insert(offset);
    }
  expect(static_cast<int>(offsets.size()) == tile_rows * kChunksPerRow, "swizzle is a bijection", tile_rows, 0, 0);
  for (int adjacent = 0; adjacent < 2; ++adjacent) {
    std::set<int> targets;
    for (int i = 0; i < tile_rows * kChunksPerRow; ++i) {
      const RowChunk c = copy_target(i, tile_rows, adjacent != 0);
      expect(c.row >= 0 && c.row < tile_rows && c.chunk >= 0 && c.chunk < kChunksPerRow, "copy target in tile", i, adjacent, 0);
      targets.insert(c.row * kChunksPerRow + c.chunk);
    }
    expect(static_cast<int>(targets.size()) == tile_rows * kChunksPerRow, "copy order is a bijection", tile_rows, adjacent, 0);
  }
}

// The grouped block order visits every (row tile, column tile) exactly once.
void check_tile_order() {
  for (int64_t rows : {1, 7, 8, 9, 100})
    for (int64_t cols : {1, 3, 8})
      for (int64_t group : {1, 8}) {
        std::set<std::pair<int64_t, int64_t>> seen;
        for (int64_t linear = 0; linear < rows * cols; ++linear) {
          const padkern::TileCoord t = padkern::grouped_tile_order(linear, rows, cols, group);
          expect(t.row >= 0 && t.row < rows && t.col >= 0 && t.col < cols, "tile order in range", int(rows), int(cols),
                 int(linear));
          seen.insert({t.row, t.col});
        }
        expect(static_cast<int64_t>(seen.size()) == rows * cols, "tile order is a bijection", int(rows), int(cols),
               int(group));
      }
}

// running_count is the number of sorted (descending) lengths above t, for every t.
void check_running_count() {
  const int64_t lengths[] = {9, 7, 7, 3, 1, 0, 0};
  for (int64_t batch = 0; batch <= 7; ++batch)
    for (int64_t t = 0; t <= 10; ++t) {
      int64_t want = 0;
      for (int64_t k = 0; k < batch; ++k) want += lengths[k] > t;
      expect(padkern::persistent::running_count(lengths, batch, t) == want, "running count", int(batch), int(t), 0);
    }
}

// In the persistent epilogue each lane takes, for each of its units, the G gates from
// fragments gate_fragment(q, ...) at accumulator element 2 * half + parity. Those must be
// the block's columns q * U + unit of the lane's rows: check against the mma.sync
// accumulator layout, and that the lanes' (row, unit) pairs cover the warp's 16 rows x U
// units exactly once.
void check_persistent_epilogue() {
  for (int gates : {3, 4})
    for (int units : {8, 16}) {
      std::set<std::pair<int, int>> cells;
      for (int lane = 0; lane < 32; ++lane)
        for (int half = 0; half < 2; ++half)
          for (int unit_block = 0; unit_block < units / 8; ++unit_block)
            for (int parity = 0; parity < 2; ++parity) {
              const int unit = padkern::persistent::lane_unit(lane, unit_block, parity);
              const int element = 2 * half + parity;
              for (int q = 0; q < gates; ++q) {
                const int fragment = padkern::persistent::gate_fragment(q, unit_block, units);
                expect(8 * fragment + accumulator_col(lane, element) == q * units + unit, "gate column", lane, q,
                       units);
                expect(accumulator_row(lane, element) == lane / 4 + 8 * half, "gate row", lane, q, units);
              }
              cells.insert({lane / 4 + 8 * half, unit});
            }
      expect(static_cast<int>(cells.size()) == 16 * units, "epilogue covers the warp's cells", gates, units, 0);
    }
  // Shapes: LSTM H = 256 in bfloat16 fits 8 units per block (4 x 8 rows x 256 x 2 B + the ring);
  // a GRU needs 16 (3 x 8 columns are not whole pairs of n8 blocks); H must be whole K-slices.
  expect(padkern::persistent::units_fit(256, 4, 8, 2, 227 * 1024), "LSTM H256 U8 fits", 0, 0, 0);
  expect(!padkern::persistent::units_fit(256, 3, 8, 2, 227 * 1024), "GRU U8 rejected", 0, 0, 0);
  expect(padkern::persistent::units_fit(256, 3, 16, 2, 227 * 1024), "GRU U16 fits", 0, 0, 0);
  expect(!padkern::persistent::units_fit(200, 4, 8, 2, 227 * 1024), "H not whole slices rejected", 0, 0, 0);
  expect(!padkern::persistent::units_fit(4096, 4, 16, 2, 227 * 1024), "shared memory bound", 0, 0, 0);
}

}  // namespace

int main() {
  check_tile_order();
  check_running_count();
  check_persistent_epilogue();
  for (int rows : {64, 128}) {
    for (int elem_bytes : {2, 4}) {
      check_a_fragments(elem_bytes, rows);
      check_b_fragments(elem_bytes, rows);
    }
    check_no_bank_conflicts(rows);
    check_bijections(rows);
  }
  check_accumulators();
  if (failures) {
    std::fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("kernel index maths: all checks passed\n");
  return 0;
}
