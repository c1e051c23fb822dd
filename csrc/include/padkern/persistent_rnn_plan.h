// Index maths of the persistent GPU recurrences (csrc/cuda/persistent_rnn.cu), kept
// free of GPU code so the CPU tests (tests/cpp/kernel_index_maths_test.cpp) check it.
//
// The persistent kernels split the hidden units over the blocks of one cooperative grid:
// block j owns units [j * U, (j + 1) * U) of every gate, holds those rows of w_hh in
// shared memory for all steps, and computes them for every running sequence each step.
// Sequences run longest first (a device-side sort of the lengths), so the sequences
// still running at step t are a prefix of that order.
#pragma once
#include <cstdint>

#include "padkern/ragged_layout.h"  // PADKERN_HOST_DEVICE

namespace padkern {
namespace persistent {

constexpr int kThreads = 256;   // 8 warps
constexpr int kTileRows = 128;  // running sequences per tile: 8 warps x 16 rows
constexpr int kRingStages = 3;
constexpr int kRowBytes = 64;   // one K-slice of one row (mma_tile_layout.h)

// How many of the lengths (sorted longest first) exceed t: the sequences running at step t.
PADKERN_HOST_DEVICE int64_t running_count(const int64_t* sorted_lengths, int64_t batch, int64_t t) {
  int64_t low = 0, high = batch;  // answer in [low, high]
  while (low < high) {
    const int64_t mid = (low + high) / 2;
    if (sorted_lengths[mid] > t) {
      low = mid + 1;
    } else {
      high = mid;
    }
  }
  return low;
}

// Shared memory of one block: its w_hh rows (gates x units, all H columns) and the
// ring of K-slices of the running hidden states.
PADKERN_HOST_DEVICE int64_t shared_bytes(int64_t hidden, int gates, int units, int element_size) {
  return static_cast<int64_t>(gates) * units * hidden * element_size +
         static_cast<int64_t>(kRingStages) * kTileRows * kRowBytes;
}

// Whether `units` per block can run a recurrence of `hidden` units and `gates` gates:
// the units tile the hidden size, the block's columns (gates x units) are whole pairs of
// n8 MMA blocks, every K-slice is whole (H a multiple of 64 bytes of elements), and the
// block's shared memory fits `shared_limit`.
PADKERN_HOST_DEVICE bool units_fit(int64_t hidden, int gates, int units, int element_size, int64_t shared_limit) {
  const int64_t slice_elements = kRowBytes / element_size;
  return units > 0 && hidden % units == 0 && (gates * units) % 16 == 0 && hidden % slice_elements == 0 &&
         shared_bytes(hidden, gates, units, element_size) <= shared_limit;
}

// The accumulator fragment (n8 block) holding gate `gate` of unit block `unit_block`
// (units 8 * unit_block .. + 7): a block's columns are gate-major (gate * U + unit), and
// U is a multiple of 8, so one lane holds every gate of its units.
PADKERN_HOST_DEVICE int gate_fragment(int gate, int unit_block, int units) { return gate * (units / 8) + unit_block; }

// The unit a lane's accumulator pair element `parity` (0, 1) holds in unit block `unit_block`.
PADKERN_HOST_DEVICE int lane_unit(int lane, int unit_block, int parity) { return 8 * unit_block + 2 * (lane % 4) + parity; }

}  // namespace persistent
}  // namespace padkern
