// CPU kernels of padkern::pad and padkern::unpad: parallel row copies (memcpy),
// dtype-agnostic because padding is pure data movement.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>

#include "padkern/aten_padding.h"

namespace padkern {
namespace {

// Rows per parallel task: a row copy is cheap, so batch many to amortise scheduling.
constexpr int64_t kRowsPerTask = 256;

// A run of consecutive padded rows (b, t) .. (b, t + rows - 1) of one sequence, all real
// (values_at: the byte offset of token t of sequence b in values) or all padding.
struct RowRun {
  bool real;
  int64_t values_at, padded_at, rows;
};

// Calls copy_run(run) for every padded row, in runs: a task's rows of one sequence split at
// its length, so the copies are a few large ones rather than one per row (a call per 1 KiB
// row cost pad 25-35% more time: README, "How the kernels work").
template <typename CopyRun>
void for_each_row_run(const PaddingLayout& layout, CopyRun copy_run) {
  const int64_t rows = layout.batch * layout.padded_length;
  at::parallel_for(0, rows, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end;) {
      const int64_t b = row / layout.padded_length, t = row % layout.padded_length;
      const int64_t start = layout.offsets[b], length = layout.offsets[b + 1] - start;
      const int64_t sequence_end = std::min(end, (b + 1) * layout.padded_length);
      const int64_t real_end = std::min(sequence_end, b * layout.padded_length + length);
      const bool real = row < real_end;
      const int64_t run_end = real ? real_end : sequence_end;
      copy_run(RowRun{real, real ? (start + t) * layout.values_row_stride : 0, padded_row_offset(layout, b, t),
                      run_end - row});
      row = run_end;
    }
  });
}

// Copies `rows` rows of `row_bytes` from src to dst, each with its own stride: one copy where
// both sides' rows lie back to back.
void copy_rows(uint8_t* dst, int64_t dst_stride, const uint8_t* src, int64_t src_stride, int64_t rows,
               int64_t row_bytes) {
  if (dst_stride == row_bytes && src_stride == row_bytes) {
    std::memcpy(dst, src, rows * row_bytes);
    return;
  }
  for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + r * dst_stride, src + r * src_stride, row_bytes);
}

at::Tensor pad_cpu(const at::Tensor& values, const at::Tensor& offsets, int64_t total_length, double padding_value,
                   bool batch_first) {
  at::Tensor padded = empty_padded(values, offsets, total_length, batch_first);
  const PaddingLayout layout = make_padding_layout(values, offsets, padded, batch_first);
  check_offsets_contents(offsets, values.size(0), total_length);
  if (layout.row_bytes == 0) return padded;  // no bytes to move (and no buffers to point into)

  // One padded row's worth of the padding value, in the dtype's own bytes; a fill whose bytes
  // are all zero (+0.0, 0, false; never -0.0) is a memset.
  at::Tensor fill = at::full({values.size(1)}, padding_value, values.options());
  const auto* fill_row = static_cast<const uint8_t*>(fill.data_ptr());
  const bool zero_fill = std::all_of(fill_row, fill_row + layout.row_bytes, [](uint8_t byte) { return byte == 0; });
  const auto* src = static_cast<const uint8_t*>(values.data_ptr());
  auto* dst = static_cast<uint8_t*>(padded.data_ptr());
  const int64_t dst_stride = layout.padded_time_stride;
  for_each_row_run(layout, [&](const RowRun& run) {
    if (run.real) {
      copy_rows(dst + run.padded_at, dst_stride, src + run.values_at, layout.values_row_stride, run.rows,
                layout.row_bytes);
    } else if (zero_fill && dst_stride == layout.row_bytes) {
      std::memset(dst + run.padded_at, 0, run.rows * layout.row_bytes);
    } else {
      copy_rows(dst + run.padded_at, dst_stride, fill_row, 0, run.rows, layout.row_bytes);
    }
  });
  return padded;
}

at::Tensor unpad_cpu(const at::Tensor& padded, const at::Tensor& offsets, int64_t total_tokens, bool batch_first) {
  at::Tensor values = empty_values(padded, offsets, total_tokens);
  const PaddingLayout layout = make_padding_layout(values, offsets, padded, batch_first);
  check_offsets_contents(offsets, total_tokens, layout.padded_length);
  if (layout.row_bytes == 0) return values;
  const auto* src = static_cast<const uint8_t*>(padded.data_ptr());
  auto* dst = static_cast<uint8_t*>(values.data_ptr());
  for_each_row_run(layout, [&](const RowRun& run) {
    if (run.real) {
      copy_rows(dst + run.values_at, layout.values_row_stride, src + run.padded_at, layout.padded_time_stride,
                run.rows, layout.row_bytes);
    }
  });
  return values;
}

}  // namespace

TORCH_LIBRARY_IMPL(padkern, CPU, m) {
  m.impl("pad", &pad_cpu);
  m.impl("unpad", &unpad_cpu);
}

}  // namespace padkern
