// Checks every binding (CPU and CUDA) runs on the tensors it hands to a kernel by pointer.
//
// The Python boundary (padkern/_validate.py) validates arguments and normalises their
// layout, so these fire only for a caller that reaches an op directly
// (torch.ops.padkern.*) with a layout the kernel does not assume: an error then, never
// a kernel reading memory it does not own. Each check is O(1), except the CPU offsets'
// contents, which are O(B) next to a kernel's O(L * features).
#pragma once
#include <ATen/ATen.h>

namespace padkern {

// offsets [B+1]: int64, unit stride, on the kernel's device.
inline void check_offsets_layout(const at::Tensor& offsets, const at::Device& device) {
  TORCH_CHECK(offsets.scalar_type() == at::kLong, "padkern: offsets must be int64, got ", offsets.scalar_type());
  TORCH_CHECK(offsets.dim() == 1 && offsets.numel() >= 1, "padkern: offsets must be 1-D with B+1 >= 1 entries, got shape ",
              offsets.sizes());
  TORCH_CHECK(offsets.numel() == 1 || offsets.stride(0) == 1, "padkern: offsets must be contiguous, got stride ",
              offsets.stride(0));
  TORCH_CHECK(offsets.device() == device, "padkern: offsets must be on ", device, ", got ", offsets.device());
}

// The offsets contract (padkern/_validate.py) against `rows` tokens (negative: any). Run by the CPU
// bindings, where reading the offsets is free; the CUDA kernels instead clamp every
// sequence into its tensor (sequence_span in ragged_layout.h), so no host sync is needed.
// `longest` bounds each length (a padded input's T), or is negative for no bound.
inline void check_offsets_contents(const at::Tensor& offsets, int64_t rows, int64_t longest = -1) {
  const int64_t* o = offsets.data_ptr<int64_t>();
  const int64_t count = offsets.numel();
  TORCH_CHECK(o[0] == 0, "padkern: offsets[0] must be 0, got ", o[0]);
  for (int64_t i = 1; i < count; ++i) {
    TORCH_CHECK(o[i] >= o[i - 1], "padkern: offsets must be non-decreasing, but offsets[", i, "]=", o[i], " < offsets[",
                i - 1, "]=", o[i - 1]);
    TORCH_CHECK(longest < 0 || o[i] - o[i - 1] <= longest, "padkern: sequence ", i - 1, " has length ",
                o[i] - o[i - 1], ", more than the padded length ", longest);
  }
  TORCH_CHECK(rows < 0 || o[count - 1] == rows, "padkern: offsets[-1] must equal the number of tokens ", rows, ", got ",
              o[count - 1]);
}

inline void check_shape(const at::Tensor& tensor, at::IntArrayRef expected, const char* name) {
  TORCH_CHECK(tensor.sizes() == expected, "padkern: ", name, " must have shape ", expected, ", got ", tensor.sizes());
}

inline void check_same_kind(const at::Tensor& tensor, const at::Tensor& like, const char* name) {
  TORCH_CHECK(tensor.scalar_type() == like.scalar_type() && tensor.device() == like.device(), "padkern: ", name,
              " must be ", like.scalar_type(), " on ", like.device(), ", got ", tensor.scalar_type(), " on ",
              tensor.device());
}

// Segment ops: values [L, D] (read through a contiguous copy); mode 0 sum, 1 mean, 2 max.
inline void check_segment_inputs(const at::Tensor& values, const at::Tensor& offsets, int64_t mode) {
  TORCH_CHECK(values.dim() == 2, "padkern: values must be [L, D], got shape ", values.sizes());
  check_offsets_layout(offsets, values.device());
  TORCH_CHECK(mode >= 0 && mode <= 2, "padkern: mode must be 0 (sum), 1 (mean) or 2 (max), got ", mode);
}

// grouped_linear: input ragged [L, K] or padded [B, T, K] (any strides: the kernels take
// them), weight [N, K] shared or [B, K, N] per sequence (any strides), bias [N] or none.
inline void check_grouped_linear_inputs(const at::Tensor& input, const at::Tensor& offsets, const at::Tensor& weight,
                                        const c10::optional<at::Tensor>& bias, int64_t activation) {
  TORCH_CHECK(input.dim() == 2 || input.dim() == 3, "padkern: input must be ragged [L, K] or padded [B, T, K], got shape ",
              input.sizes());
  check_offsets_layout(offsets, input.device());
  const int64_t batch = offsets.size(0) - 1, features_in = input.size(-1);
  TORCH_CHECK(input.dim() == 2 || input.size(0) == batch, "padkern: a padded input must have B = ", batch,
              " sequences, got shape ", input.sizes());
  check_same_kind(weight, input, "weight");
  if (weight.dim() == 2) {
    TORCH_CHECK(weight.size(1) == features_in, "padkern: weight must be [N, ", features_in, "], got ", weight.sizes());
  } else {
    TORCH_CHECK(weight.dim() == 3 && weight.size(0) == batch && weight.size(1) == features_in,
                "padkern: weight must be [N, K] or [B=", batch, ", K=", features_in, ", N], got ", weight.sizes());
  }
  if (bias.has_value()) {
    check_same_kind(*bias, input, "bias");
    check_shape(*bias, {weight.dim() == 2 ? weight.size(0) : weight.size(2)}, "bias");
  }
  TORCH_CHECK(activation >= 0 && activation <= 3, "padkern: activation must be 0..3, got ", activation);
}

// ragged_outer_bmm: x [L, M], y [L, N] (any strides: the CPU reads them in place, CUDA through
// contiguous copies).
inline void check_outer_bmm_inputs(const at::Tensor& x, const at::Tensor& y, const at::Tensor& offsets) {
  TORCH_CHECK(x.dim() == 2 && y.dim() == 2 && x.size(0) == y.size(0), "padkern: x and y must be [L, M] and [L, N], got ",
              x.sizes(), " and ", y.sizes());
  check_same_kind(y, x, "y");
  check_offsets_layout(offsets, x.device());
}

// Recurrences: w_hh must be [gate_count * H, H]; returns H.
inline int64_t recurrent_hidden_size(const at::Tensor& w_hh, int64_t gate_count) {
  TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) == gate_count * w_hh.size(1), "padkern: w_hh must be [", gate_count,
              "*H, H], got ", w_hh.sizes());
  return w_hh.size(1);
}

// One [rows, cols] matrix a recurrence reads, of `like`'s dtype and device.
struct ExpectedMatrix {
  const at::Tensor& tensor;
  const char* name;
  int64_t rows, cols;
};

// Each matrix has its expected shape and `like`'s dtype and device (per-op use:
// padkern/recurrence_checks.h).
inline void check_recurrence_inputs(const at::Tensor& like, std::initializer_list<ExpectedMatrix> matrices) {
  for (const ExpectedMatrix& m : matrices) {
    check_same_kind(m.tensor, like, m.name);
    check_shape(m.tensor, {m.rows, m.cols}, m.name);
  }
}

}  // namespace padkern
