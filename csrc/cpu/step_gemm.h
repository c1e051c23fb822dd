// The GEMM a CPU recurrence runs at every step: the running sequences' state rows by the
// same weight, 256 times for a 256-step batch, on at most B rows each time.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#include "brgemm_blocks.h"
#include "padkern/int_math.h"

namespace padkern {
namespace cpu {

// rows @ weight^T with weight [N, K] in torch.nn.functional.linear's convention.
//
// float32 goes to oneDNN's brgemm micro-kernel (brgemm_blocks.h) rather than torch's oneDNN
// linear, whose 8-10 us a call cost 2-2.5 ms of a 256-step LSTM at H = 256. The weight is laid
// out once per call as weight^T in column panels [P, K, kBrgemmColumns], each contiguous, so a
// panel's K rows sit in one stretch of memory rather than N floats apart. On a Zen 5 core the
// steps of the guard's batch (B64 T256 I = H = 256, rows 64 falling to 1) took, against
// torch's oneDNN linear on a weight packed once: N = 256 (RNN) 4.6 vs 8.3 ms, 768 (GRU) 13.4
// vs 18.1 ms, 1024 (LSTM) 18.1 vs 23.6 ms; at H = 1024 (B32) 150 vs 180 ms. float64 uses at::mm.
class StepGemm {
 public:
  // weight [N, K], any strides (the backward passes w_hh^T as a view): copied once, into panels.
  explicit StepGemm(const at::Tensor& weight) : weight_(weight) {
    const int64_t n = weight_.size(0), k = weight_.size(1);
    if (weight_.scalar_type() != at::kFloat || n == 0 || k == 0) return;
    const int64_t panels = ceil_div(n, kBrgemmColumns);
    at::Tensor padded = at::zeros({panels * kBrgemmColumns, k}, weight_.options());
    padded.narrow(0, 0, n).copy_(weight_);
    panels_ = padded.view({panels, kBrgemmColumns, k}).transpose(1, 2).contiguous();
  }

  int64_t columns() const { return weight_.size(0); }

  // out[:m] = rows[:m] @ weight^T, or += when `accumulate`; rows m.. of out are not touched.
  // rows [>= m, K] and out [>= m, N] are distinct, row-major and contiguous (the recurrences'
  // state buffers).
  void multiply(const at::Tensor& rows, int64_t m, bool accumulate, const at::Tensor& out) const {
    TORCH_INTERNAL_ASSERT(rows.is_contiguous() && out.is_contiguous() && rows.size(1) == weight_.size(1) &&
                          out.size(1) == weight_.size(0) && m <= rows.size(0) && m <= out.size(0) &&
                          !rows.is_alias_of(out));
    if (m == 0) return;
    if (!panels_.defined()) {
      at::Tensor target = out.narrow(0, 0, m);
      const at::Tensor source = rows.narrow(0, 0, m);
      if (accumulate) {
        target.addmm_(source, weight_.t());
      } else {
        at::mm_out(target, source, weight_.t());
      }
      return;
    }
    const int64_t n = weight_.size(0), k = weight_.size(1), panels = panels_.size(0);
    const int64_t row_blocks = ceil_div(m, kBrgemmRows);
    // A task is a row block times a panel's columns, or a part of them: at H = 256 and B <= 64
    // the RNN's step and every backward step have 2 panels, which would leave the rest of a
    // many-core host idle. Parts of 32 columns at the narrowest.
    const int64_t threads = at::get_num_threads(), blocks = row_blocks * panels;
    const int64_t parts = std::clamp<int64_t>(ceil_div(threads, blocks), 1, kBrgemmColumns / 32);
    const int64_t part_width = kBrgemmColumns / parts;
    const float* a = rows.data_ptr<float>();
    const float* b = panels_.data_ptr<float>();
    float* c = out.data_ptr<float>();
    at::parallel_for(0, blocks * parts, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t block = task / parts, part = task % parts;
        const int64_t row = (block / panels) * kBrgemmRows, panel = block % panels;
        const int64_t column = panel * kBrgemmColumns + part * part_width;
        if (column >= n) continue;  // a part wholly in the last panel's zero padding
        brgemm_block(std::min(kBrgemmRows, m - row), std::min(part_width, n - column), k, a + row * k, k,
                     b + panel * k * kBrgemmColumns + part * part_width, kBrgemmColumns, c + row * n + column, n,
                     accumulate);
      }
    });
  }

 private:
  at::Tensor weight_;  // [N, K], as given
  at::Tensor panels_;  // [P, K, kBrgemmColumns] float32: weight^T in column panels, zero past N; or undefined
};

}  // namespace cpu
}  // namespace padkern
