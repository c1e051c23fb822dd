// Step schedule of the CPU recurrences. Sequences are visited longest first (an
// argsort of the B lengths: the data itself is never reordered), so the sequences
// still running at step t are always a prefix 0..active[t]-1 of that order and the
// recurrent matmul of a step is one GEMM on a contiguous block of state rows.
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "linear_gemm.h"
#include "padkern/ragged_layout.h"

namespace padkern {
namespace cpu {

struct RaggedSchedule {
  std::vector<int64_t> order;   // [B] sequence index, longest first (stable)
  std::vector<int64_t> active;  // [T] sequences with length > t
  int64_t steps = 0;            // T: the longest length
};

inline RaggedSchedule make_schedule(const int64_t* offsets, int64_t batch) {
  RaggedSchedule s;
  s.order.resize(batch);
  std::iota(s.order.begin(), s.order.end(), 0);
  auto length = [&](int64_t b) { return offsets[b + 1] - offsets[b]; };
  std::stable_sort(s.order.begin(), s.order.end(), [&](int64_t a, int64_t b) { return length(a) > length(b); });
  s.steps = batch > 0 ? length(s.order[0]) : 0;
  s.active.assign(s.steps, 0);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t = 0; t < length(b); ++t) ++s.active[t];
  }
  return s;
}

// The gate loops are compiled for AVX-512, AVX2 and baseline x86-64 and the best
// one the machine supports is picked when the library loads (4x to 16x wide).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define PADKERN_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define PADKERN_VECTOR_CLONES
#endif

// Gate work per sequence is ~30 flops x H: keep tasks around 4K hidden units.
inline int64_t sequences_per_task(int64_t hidden) { return std::max<int64_t>(1, 4096 / std::max<int64_t>(hidden, 1)); }

// Copies rows of a [B, H] tensor into schedule order, or back.
template <typename scalar_t>
void gather_rows(const scalar_t* source, const std::vector<int64_t>& order, int64_t hidden, scalar_t* target) {
  for (size_t k = 0; k < order.size(); ++k) std::copy_n(source + order[k] * hidden, hidden, target + k * hidden);
}
template <typename scalar_t>
void scatter_rows(const scalar_t* source, const std::vector<int64_t>& order, int64_t hidden, scalar_t* target) {
  for (size_t k = 0; k < order.size(); ++k) std::copy_n(source + k * hidden, hidden, target + order[k] * hidden);
}

}  // namespace cpu
}  // namespace padkern
