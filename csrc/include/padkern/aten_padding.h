// Builds a PaddingLayout from ATen tensors; shared by the CPU kernels and the CUDA bindings.
#pragma once
#include <ATen/ATen.h>

#include <vector>

#include "padkern/ragged_layout.h"
#include "padkern/tensor_checks.h"

namespace padkern {

inline void check_padding_inputs(const at::Tensor& values, const at::Tensor& offsets, const at::Tensor& padded,
                                 bool batch_first) {
  check_offsets_layout(offsets, values.device());
  TORCH_CHECK(values.dim() == 2 && padded.dim() == 3, "padkern: expected values [L, D] and padded 3-D, got ",
              values.sizes(), " and ", padded.sizes());
  TORCH_CHECK(padded.size(batch_first ? 0 : 1) == offsets.size(0) - 1, "padkern: padded must hold B = ",
              offsets.size(0) - 1, " sequences, got shape ", padded.sizes());
  TORCH_CHECK(values.size(1) == padded.size(2), "padkern: values and padded must have the same feature size, got ",
              values.size(1), " and ", padded.size(2));
  TORCH_CHECK(values.size(1) <= 1 || values.stride(1) == 1, "padkern: values' feature dimension must be contiguous");
  TORCH_CHECK(padded.size(2) <= 1 || padded.stride(2) == 1, "padkern: padded's feature dimension must be contiguous");
  check_same_kind(padded, values, "padded");
}

inline PaddingLayout make_padding_layout(const at::Tensor& values, const at::Tensor& offsets, const at::Tensor& padded,
                                         bool batch_first) {
  check_padding_inputs(values, offsets, padded, batch_first);
  const int64_t element = values.element_size();
  PaddingLayout layout;
  layout.offsets = offsets.data_ptr<int64_t>();
  layout.batch = offsets.size(0) - 1;
  layout.tokens = values.size(0);
  layout.padded_length = padded.size(batch_first ? 1 : 0);
  layout.row_bytes = values.size(1) * element;
  layout.values_row_stride = values.stride(0) * element;
  layout.padded_batch_stride = padded.stride(batch_first ? 0 : 1) * element;
  layout.padded_time_stride = padded.stride(batch_first ? 1 : 0) * element;
  return layout;
}

// The outputs of pad and unpad, allocated once their operands' ranks, offsets and sizes
// are known to be sound (make_padding_layout then checks the rest).
inline at::Tensor empty_padded(const at::Tensor& values, const at::Tensor& offsets, int64_t total_length,
                               bool batch_first) {
  check_offsets_layout(offsets, values.device());
  TORCH_CHECK(values.dim() == 2, "padkern: values must be [L, D], got shape ", values.sizes());
  TORCH_CHECK(total_length >= 0, "padkern: total_length must be non-negative, got ", total_length);
  const int64_t batch = offsets.size(0) - 1;
  auto shape = batch_first ? std::vector<int64_t>{batch, total_length, values.size(1)}
                           : std::vector<int64_t>{total_length, batch, values.size(1)};
  return at::empty(shape, values.options());
}

inline at::Tensor empty_values(const at::Tensor& padded, const at::Tensor& offsets, int64_t total_tokens) {
  check_offsets_layout(offsets, padded.device());
  TORCH_CHECK(padded.dim() == 3, "padkern: padded must be [B, T, D] or [T, B, D], got shape ", padded.sizes());
  TORCH_CHECK(total_tokens >= 0, "padkern: total_tokens must be non-negative, got ", total_tokens);
  TORCH_CHECK(offsets.size(0) > 1 || total_tokens == 0, "padkern: an empty batch has no tokens, got total_tokens ",
              total_tokens);
  return at::empty({total_tokens, padded.size(2)}, padded.options());
}

// Each sequence's length [B] as the kernels see it: its span clamped into the `rows` rows
// that exist, as sequence_span clamps it (so counts built from it agree with the kernels
// whatever the offsets hold). Computed on the offsets' device: no host synchronisation.
inline at::Tensor span_lengths(const at::Tensor& offsets, int64_t rows) {
  const int64_t batch = offsets.size(0) - 1;
  const at::Tensor starts = offsets.slice(0, 0, batch).clamp(0, rows);
  return at::maximum(offsets.slice(0, 1).clamp(0, rows), starts) - starts;
}

}  // namespace padkern
