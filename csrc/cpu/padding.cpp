// CPU kernels of padkern::pad and padkern::unpad: parallel row copies (memcpy),
// dtype-agnostic because padding is pure data movement.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstring>

#include "padkern/aten_padding.h"

namespace padkern {
namespace {

// Rows per parallel task: a row copy is cheap, so batch many to amortise scheduling.
constexpr int64_t kRowsPerTask = 256;

// Calls copy_row(values_byte_offset, padded_byte_offset) for every padded row (b, t);
// values_byte_offset is -1 where t >= length_b (a padding row).
template <typename CopyRow>
void for_each_padded_row(const PaddingLayout& layout, CopyRow copy_row) {
  const int64_t rows = layout.batch * layout.padded_length;
  at::parallel_for(0, rows, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / layout.padded_length;
      const int64_t t = row % layout.padded_length;
      const int64_t start = layout.offsets[b];
      const bool valid = t < layout.offsets[b + 1] - start;
      copy_row(valid ? (start + t) * layout.values_row_stride : -1, padded_row_offset(layout, b, t));
    }
  });
}

at::Tensor pad_cpu(const at::Tensor& values, const at::Tensor& offsets, int64_t total_length, double padding_value,
                   bool batch_first) {
  at::Tensor padded = empty_padded(values, offsets, total_length, batch_first);
  const PaddingLayout layout = make_padding_layout(values, offsets, padded, batch_first);
  check_offsets_contents(offsets, values.size(0), total_length);

  // One padded row's worth of the padding value, in the dtype's own bytes.
  at::Tensor fill = at::full({values.size(1)}, padding_value, values.options());
  const auto* fill_row = static_cast<const uint8_t*>(fill.data_ptr());
  const auto* src = static_cast<const uint8_t*>(values.data_ptr());
  auto* dst = static_cast<uint8_t*>(padded.data_ptr());
  for_each_padded_row(layout, [&](int64_t values_at, int64_t padded_at) {
    std::memcpy(dst + padded_at, values_at >= 0 ? src + values_at : fill_row, layout.row_bytes);
  });
  return padded;
}

at::Tensor unpad_cpu(const at::Tensor& padded, const at::Tensor& offsets, int64_t total_tokens, bool batch_first) {
  at::Tensor values = empty_values(padded, offsets, total_tokens);
  const PaddingLayout layout = make_padding_layout(values, offsets, padded, batch_first);
  check_offsets_contents(offsets, total_tokens, layout.padded_length);
  const auto* src = static_cast<const uint8_t*>(padded.data_ptr());
  auto* dst = static_cast<uint8_t*>(values.data_ptr());
  for_each_padded_row(layout, [&](int64_t values_at, int64_t padded_at) {
    if (values_at >= 0) std::memcpy(dst + values_at, src + padded_at, layout.row_bytes);
  });
  return values;
}

}  // namespace

TORCH_LIBRARY_IMPL(padkern, CPU, m) {
  m.impl("pad", &pad_cpu);
  m.impl("unpad", &unpad_cpu);
}

}  // namespace padkern
