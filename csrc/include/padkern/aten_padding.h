// Builds a PaddingLayout from ATen tensors; shared by the CPU kernels and the CUDA bindings.
#pragma once
#include <ATen/ATen.h>

#include <vector>

#include "padkern/ragged_layout.h"
#include "padkern/tensor_checks.h"

namespace padkern {

inline void check_padding_inputs(const at::Tensor& values, const at::Tensor& offsets, const at::Tensor& padded) {
  check_offsets_layout(offsets, values.device());
  TORCH_CHECK(values.dim() == 2 && padded.dim() == 3, "padkern: expected values [L, D] and padded 3-D, got ",
              values.sizes(), " and ", padded.sizes());
  TORCH_CHECK(values.size(1) == padded.size(2), "padkern: values and padded must have the same feature size, got ",
              values.size(1), " and ", padded.size(2));
  TORCH_CHECK(values.size(1) <= 1 || values.stride(1) == 1, "padkern: values' feature dimension must be contiguous");
  TORCH_CHECK(padded.size(2) <= 1 || padded.stride(2) == 1, "padkern: padded's feature dimension must be contiguous");
  check_same_kind(padded, values, "padded");
}

inline PaddingLayout make_padding_layout(const at::Tensor& values, const at::Tensor& offsets, const at::Tensor& padded,
                                         bool batch_first) {
  check_padding_inputs(values, offsets, padded);
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

inline at::Tensor empty_padded(const at::Tensor& values, int64_t batch, int64_t total_length, bool batch_first) {
  auto shape = batch_first ? std::vector<int64_t>{batch, total_length, values.size(1)}
                           : std::vector<int64_t>{total_length, batch, values.size(1)};
  return at::empty(shape, values.options());
}

}  // namespace padkern
