// Step schedule of the CPU recurrences. Sequences are visited longest first (an
// argsort of the B lengths: the data itself is never reordered), so the sequences
// still running at step t are always a prefix 0..active[t]-1 of that order and the
// recurrent matmul of a step is one GEMM on a contiguous block of state rows.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "step_gemm.h"
#include "padkern/ragged_layout.h"
#include "padkern/vector_clones.h"  // the gate loops' clones

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

// row(k, b, token) for each sequence k running at step t (sequence b, at its token of step t),
// in parallel.
template <typename Row>
void for_running_sequences(const RaggedSchedule& schedule, const int64_t* offsets, bool reverse, int64_t t,
                           int64_t hidden, Row&& row) {
  at::parallel_for(0, schedule.active[t], sequences_per_task(hidden), [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const int64_t b = schedule.order[k];
      row(k, b, step_token(offsets[b], offsets[b + 1], t, reverse));
    }
  });
}

// The forward steps of a recurrence: at step t one GEMM of the running sequences' hidden
// states (rows 0..running-1 of `state` [B, H], schedule order) by w_hh^T (`recurrent`), then
// `update(k, token, product_row)` for each running sequence k in parallel, which writes
// row k of `state` and the outputs at `token`.
template <typename scalar_t, typename Update>
void run_forward_steps(const RaggedSchedule& schedule, const int64_t* offsets, bool reverse,
                       const StepGemm& recurrent, const at::Tensor& state, int64_t hidden, Update&& update) {
  // [B, G] written by every step's GEMM and read in place by its updates.
  const int64_t gate_width = recurrent.columns();
  const at::Tensor product = at::empty({state.size(0), gate_width}, state.options());
  const scalar_t* rows = product.data_ptr<scalar_t>();
  for (int64_t t = 0; t < schedule.steps; ++t) {
    const int64_t running = schedule.active[t];
    recurrent.multiply(state, running, /*accumulate=*/false, product);
    for_running_sequences(schedule, offsets, reverse, t, hidden,
                          [&](int64_t k, int64_t, int64_t token) { update(k, token, rows + k * gate_width); });
  }
}

// The backward steps, last first: `step(k, b, t, token)` for each sequence k running at step t
// (sequence b, in parallel), then `carry(running)`, the GEMM that carries the state gradient
// to step t - 1. Rows past `running` are sequences that have not started yet (counting from
// their last step): they keep the gradient they entered with.
template <typename Step, typename Carry>
void run_backward_steps(const RaggedSchedule& schedule, const int64_t* offsets, bool reverse, int64_t hidden,
                        Step&& step, Carry&& carry) {
  for (int64_t t = schedule.steps - 1; t >= 0; --t) {
    for_running_sequences(schedule, offsets, reverse, t, hidden,
                          [&](int64_t k, int64_t b, int64_t token) { step(k, b, t, token); });
    carry(schedule.active[t]);
  }
}

}  // namespace cpu
}  // namespace padkern
