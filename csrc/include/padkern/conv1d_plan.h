// The ragged 1-D convolution's plan, written once for the CPU and CUDA bindings: which
// kernels run and which GEMMs they surround. A backend supplies `Kernels` with four
// memory-bound kernels (see csrc/cpu/conv1d.cpp, csrc/cuda/conv1d_bindings.cpp):
//
//   depthwise(x [L, C], offsets, taps_weight [k, C] (accumulation dtype), bias?, taps, out [L, C])
//       out[t, c] = bias[c] + sum_j taps_weight[j, c] * x[source_j(t), c]
//   depthwise_weight_grad(grad [L, C], x [L, C], offsets, taps) -> [k, C] (accumulation dtype)
//       sum over t of grad[t, c] * x[source_j(t), c]
//   gather_taps(y [G, L, k * N], offsets, taps, bias?, out [L, G * N])
//       out[t, g * N + n] = bias + sum_j y[g, source_j(t), j * N + n]
//   shifted_rows(x [L, C], offsets, shift) -> [L, C]: row t is x[t + shift] when that row is
//       in t's sequence, else zeros
//
// A backend that also has direct grouped kernels (the CPU: csrc/cpu/conv1d_grouped.h) sets
// kHasGroupedDirect and supplies, for the shapes where grouped_direct(shape, dtype) says so:
//
//   grouped(x [L, G * C], offsets, taps_weight [G, k, C, N], bias?, taps, out [L, G * N])
//       out[t, g * N + n] = bias + sum_j sum_c taps_weight[g, j, c, n] * x[source_j(t), g * C + c]
//   grouped_weight_grad(grad [L, G * N], x [L, G * C], offsets, groups, taps) -> [G, k, C, N]
//       (accumulation dtype) sum over t of x[source_j(t), g * C + c] * grad[t, g * N + n]
//
// Depthwise (groups == C_in == C_out) is one pass over the real tokens. Any other groups
// is im2col-free: out = sum_j shift_j(x) @ W_j^T computed as sum_j shift_j(x @ W_j^T),
// one GEMM over the L real tokens against every tap at once ([L, C_in/G] x [C_in/G, k
// C_out/G] per group), then a gather that adds each tap's rows from the token's own
// sequence only. The shift moves whole rows, so it commutes with the right product:
// nothing is read across a boundary, and a neighbour's NaN never reaches a token.
#pragma once
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include <array>
#include <tuple>

#include "padkern/conv1d_layout.h"
#include "padkern/tensor_checks.h"

namespace padkern {

struct ConvShape {
  int64_t rows, batch, in_channels, out_channels, kernel_size, groups;
  int64_t in_per_group() const { return in_channels / groups; }
  int64_t out_per_group() const { return out_channels / groups; }
  // groups == channels with one filter per channel: the common (Mamba-style) case.
  bool depthwise() const { return groups == in_channels && out_channels == in_channels; }
};

inline ConvShape check_conv1d_inputs(const at::Tensor& values, const at::Tensor& offsets, const at::Tensor& weight,
                                     const c10::optional<at::Tensor>& bias, int64_t left_pad, int64_t dilation,
                                     int64_t groups) {
  TORCH_CHECK(values.dim() == 2, "padkern: values must be [L, C_in], got shape ", values.sizes());
  check_offsets_layout(offsets, values.device());
  check_same_kind(weight, values, "weight");
  TORCH_CHECK(weight.dim() == 3 && weight.size(2) >= 1, "padkern: weight must be [C_out, C_in / groups, k], got ",
              weight.sizes());
  TORCH_CHECK(groups >= 1 && values.size(1) % groups == 0 && weight.size(0) % groups == 0 &&
                  weight.size(1) * groups == values.size(1),
              "padkern: groups=", groups, " must divide C_in=", values.size(1), " and C_out=", weight.size(0),
              ", with weight [C_out, C_in / groups, k], got ", weight.sizes());
  TORCH_CHECK(dilation >= 1, "padkern: dilation must be >= 1, got ", dilation);
  const int64_t k = weight.size(2);
  TORCH_CHECK(left_pad >= 0 && left_pad <= dilation * (k - 1), "padkern: left_pad must be in [0, dilation * (k - 1) = ",
              dilation * (k - 1), "], got ", left_pad);
  if (bias.has_value()) {
    check_same_kind(*bias, values, "bias");
    check_shape(*bias, {weight.size(0)}, "bias");
  }
  return {values.size(0), offsets.size(0) - 1, values.size(1), weight.size(0), k, groups};
}

// [C_out, C_in/G, k] -> [G, C_in/G, k * C_out/G]: entry (g, c, j * N + n) is weight[g * N + n, c, j].
inline at::Tensor forward_tap_matrix(const at::Tensor& weight, const ConvShape& s) {
  return weight.view({s.groups, s.out_per_group(), s.in_per_group(), s.kernel_size})
      .permute({0, 2, 3, 1})
      .reshape({s.groups, s.in_per_group(), s.kernel_size * s.out_per_group()});
}

// [C_out, C_in/G, k] -> [G, C_out/G, k * C_in/G]: entry (g, n, j * C + c) is weight[g * N + n, c, j].
inline at::Tensor input_grad_tap_matrix(const at::Tensor& weight, const ConvShape& s) {
  return weight.view({s.groups, s.out_per_group(), s.in_per_group(), s.kernel_size})
      .permute({0, 1, 3, 2})
      .reshape({s.groups, s.out_per_group(), s.kernel_size * s.in_per_group()});
}

// [C_out, C_in/G, k] -> [G, k, C_in/G, C_out/G] (a view): entry (g, j, c, n) is weight[g * N + n, c, j].
inline at::Tensor grouped_forward_weight(const at::Tensor& weight, const ConvShape& s) {
  return weight.view({s.groups, s.out_per_group(), s.in_per_group(), s.kernel_size}).permute({0, 3, 2, 1});
}

// [C_out, C_in/G, k] -> [G, k, C_out/G, C_in/G] (a view): entry (g, j, n, c) is weight[g * N + n, c, j].
inline at::Tensor grouped_input_grad_weight(const at::Tensor& weight, const ConvShape& s) {
  return weight.view({s.groups, s.out_per_group(), s.in_per_group(), s.kernel_size}).permute({0, 3, 1, 2});
}

// [L, G * C] -> [G, L, C] (a view).
inline at::Tensor by_group(const at::Tensor& rows, int64_t groups) {
  return rows.view({rows.size(0), groups, rows.size(1) / groups}).transpose(0, 1);
}

// Depthwise [C, 1, k] -> [k, C] in the accumulation dtype, so the channel loop reads one
// tap's weights contiguously.
inline at::Tensor depthwise_taps_weight(const at::Tensor& weight) {
  return weight.select(1, 0).t().to(at::toOpMathType(weight.scalar_type())).contiguous();
}

// Whether the direct grouped kernels take this shape. A backend without them
// (kHasGroupedDirect false) never compiles their calls: each sits under `if constexpr`.
template <class Kernels>
bool grouped_direct(const ConvShape& s, at::ScalarType dtype) {
  if constexpr (Kernels::kHasGroupedDirect) {
    return Kernels::grouped_direct(s, dtype);
  } else {
    return false;
  }
}

template <class Kernels>
at::Tensor conv1d_forward(const at::Tensor& values, const at::Tensor& offsets, const at::Tensor& weight,
                          const c10::optional<at::Tensor>& bias, int64_t left_pad, int64_t dilation, int64_t groups) {
  const ConvShape s = check_conv1d_inputs(values, offsets, weight, bias, left_pad, dilation, groups);
  Kernels::check_offsets(offsets, s.rows);
  const at::Tensor x = values.contiguous();
  const c10::optional<at::Tensor> b = bias.has_value() ? c10::optional<at::Tensor>(bias->contiguous()) : c10::nullopt;
  at::Tensor out = at::empty({s.rows, s.out_channels}, values.options());
  // No sequence: no token belongs anywhere (L is 0 under the offsets contract).
  if (s.batch == 0 || out.numel() == 0) return out.zero_();
  const ConvTaps taps = forward_taps(s.kernel_size, left_pad, dilation);
  if (s.depthwise()) {
    Kernels::depthwise(x, offsets, depthwise_taps_weight(weight), b, taps, out);
  } else if (grouped_direct<Kernels>(s, x.scalar_type())) {
    if constexpr (Kernels::kHasGroupedDirect) {
      Kernels::grouped(x, offsets, grouped_forward_weight(weight.contiguous(), s), b, taps, out);
    }
  } else {
    const at::Tensor y = at::bmm(by_group(x, s.groups), forward_tap_matrix(weight.contiguous(), s));
    Kernels::gather_taps(y, offsets, taps, b, out);
  }
  return out;
}

template <class Kernels>
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv1d_backward(const at::Tensor& grad_output, const at::Tensor& values,
                                                               const at::Tensor& offsets, const at::Tensor& weight,
                                                               int64_t left_pad, int64_t dilation, int64_t groups,
                                                               std::array<bool, 3> output_mask) {
  const ConvShape s = check_conv1d_inputs(values, offsets, weight, c10::nullopt, left_pad, dilation, groups);
  check_same_kind(grad_output, values, "grad_output");
  check_shape(grad_output, {s.rows, s.out_channels}, "grad_output");
  Kernels::check_offsets(offsets, s.rows);
  const at::Tensor grad = grad_output.contiguous();
  const at::Tensor x = values.contiguous();
  const bool empty = s.batch == 0 || s.rows == 0;
  at::Tensor grad_values = values.new_empty({0}), grad_weight = weight.new_empty({0}), grad_bias = weight.new_empty({0});
  if (output_mask[2]) {
    grad_bias = at::sum(grad, {0}, false, at::toOpMathType(grad.scalar_type())).to(grad.scalar_type());
  }
  if (output_mask[0]) {
    grad_values = at::empty({s.rows, s.in_channels}, values.options());
    if (empty || grad_values.numel() == 0) {
      grad_values.zero_();
    } else {
      const ConvTaps taps = mirrored_taps(s.kernel_size, left_pad, dilation);
      if (s.depthwise()) {
        Kernels::depthwise(grad, offsets, depthwise_taps_weight(weight), c10::nullopt, taps, grad_values);
      } else if (grouped_direct<Kernels>(s, x.scalar_type())) {
        if constexpr (Kernels::kHasGroupedDirect) {
          Kernels::grouped(grad, offsets, grouped_input_grad_weight(weight.contiguous(), s), c10::nullopt, taps,
                           grad_values);
        }
      } else {
        const at::Tensor z = at::bmm(by_group(grad, s.groups), input_grad_tap_matrix(weight.contiguous(), s));
        Kernels::gather_taps(z, offsets, taps, c10::nullopt, grad_values);
      }
    }
  }
  if (output_mask[1]) {
    if (empty || weight.numel() == 0) {
      grad_weight = at::zeros_like(weight, at::MemoryFormat::Contiguous);
    } else if (s.depthwise()) {
      const at::Tensor per_tap = Kernels::depthwise_weight_grad(grad, x, offsets, forward_taps(s.kernel_size, left_pad, dilation));
      grad_weight = per_tap.t().unsqueeze(1).to(weight.scalar_type()).contiguous();
    } else if (grouped_direct<Kernels>(s, x.scalar_type())) {
      if constexpr (Kernels::kHasGroupedDirect) {
        const at::Tensor per_tap = Kernels::grouped_weight_grad(grad, x, offsets, s.groups,
                                                                forward_taps(s.kernel_size, left_pad, dilation));
        grad_weight = per_tap.permute({0, 3, 2, 1})
                          .reshape({s.out_channels, s.in_per_group(), s.kernel_size})
                          .to(weight.scalar_type())
                          .contiguous();
      }
    } else {
      // One [C_out/G, L] x [L, C_in/G] GEMM per group and tap, over a copy of x's rows
      // shifted within their sequences (zero rows where a tap falls outside): each tap's
      // copy is [L, C_in], not the k times larger im2col buffer.
      grad_weight = at::empty({s.groups, s.out_per_group(), s.in_per_group(), s.kernel_size}, weight.options());
      const at::Tensor grad_t = by_group(grad, s.groups).transpose(1, 2);
      const ConvTaps taps = forward_taps(s.kernel_size, left_pad, dilation);
      for (int64_t j = 0; j < s.kernel_size; ++j) {
        const at::Tensor shifted = Kernels::shifted_rows(x, offsets, tap_shift(taps, j));
        grad_weight.select(3, j).copy_(at::bmm(grad_t, by_group(shifted, s.groups)));
      }
      grad_weight = grad_weight.view({s.out_channels, s.in_per_group(), s.kernel_size});
    }
  }
  return {grad_values, grad_weight, grad_bias};
}

}  // namespace padkern
