// Registers the CUDA kernels of padkern::grouped_linear, ragged_outer_bmm,
// segment_reduce and segment_softmax: allocation, strides and the tile prefix here.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <tuple>
#include <vector>

#include "element_type.h"
#include "padkern/aten_padding.h"
#include "padkern/cuda_check.h"
#include "padkern/linear_kernels.h"
#include "padkern/tensor_checks.h"

namespace padkern {
namespace {

int sm_count() { return at::cuda::getCurrentDeviceProperties()->multiProcessorCount; }

// A shared weight over ragged values is one dense GEMM over all L rows (every row is a
// real token), which cuBLAS runs at the hardware's rate: take it, with the bias in the
// GEMM. The activation runs as its own op, in padkern's definition (relu keeps NaN,
// gelu is the erf form), which cuBLASLt's fused epilogues do not promise.
// PADKERN_DENSE_LINEAR=0 sends these calls to padkern's kernel instead (for tests and
// benchmarks of the kernel itself).
bool dense_route_enabled() {
  const char* value = std::getenv("PADKERN_DENSE_LINEAR");
  return value == nullptr || std::string(value) != "0";
}

std::tuple<at::Tensor, at::Tensor> dense_linear(const at::Tensor& input, const at::Tensor& weight,
                                                const c10::optional<at::Tensor>& bias, int64_t activation,
                                                bool save_preactivation) {
  at::Tensor z = bias.has_value() ? at::addmm(*bias, input, weight.t()) : at::mm(input, weight.t());
  if (activation == 0) return {z, at::empty({0}, input.options())};
  if (save_preactivation) {  // z is kept for backward: the activation writes a new tensor
    at::Tensor out = activation == 1 ? at::relu(z) : activation == 2 ? at::gelu(z) : at::silu(z);
    return {out, z};
  }
  if (activation == 1) {
    at::relu_(z);
  } else if (activation == 2) {
    at::gelu_(z);
  } else {
    at::silu_(z);
  }
  return {z, at::empty({0}, input.options())};
}

std::tuple<at::Tensor, at::Tensor> grouped_linear_cuda(const at::Tensor& input, const at::Tensor& offsets,
                                                       const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                                                       int64_t activation, bool save_preactivation,
                                                       int64_t total_tokens) {
  check_grouped_linear_inputs(input, offsets, weight, bias, activation);
  const c10::cuda::CUDAGuard guard(input.device());
  const bool padded = input.dim() == 3;
  if (!padded && weight.dim() == 2 && dense_route_enabled()) {
    return dense_linear(input, weight, bias, activation, save_preactivation);
  }
  const int64_t batch = offsets.size(0) - 1;
  const int64_t features = weight.dim() == 2 ? weight.size(0) : weight.size(2);
  std::vector<int64_t> shape(input.sizes().begin(), input.sizes().end());
  shape.back() = features;
  // Padded rows must read as exact zeros; the kernel writes every real row.
  at::Tensor out = padded ? at::zeros(shape, input.options()) : at::empty(shape, input.options());
  const bool save = save_preactivation && activation != 0;
  at::Tensor pre = save ? at::zeros_like(out) : at::empty({0}, input.options());
  const at::Tensor bias_contiguous = bias.has_value() ? bias->contiguous() : at::Tensor();
  const int64_t row_limit = padded ? input.size(1) : input.size(0);
  // Rows per sequence: real ones where L is known (it is -1 when only the GPU knows it).
  const int64_t known_rows = padded ? (total_tokens >= 0 ? total_tokens : batch * input.size(1)) : input.size(0);
  const int64_t mean_rows = known_rows / std::max<int64_t>(batch, 1);
  const cuda::GemmTiles tiles =
      cuda::grouped_gemm_tiles(element_type(input), tf32_allowed(), mean_rows, padded ? batch * row_limit : row_limit,
                               features, sm_count());
  // Prefix over per-sequence row-tile counts, on the device: no host synchronisation.
  // Tile counts from the lengths the kernel will use (clamped as sequence_span does), so
  // the prefix is monotone and cannot overflow whatever the offsets hold.
  const at::Tensor lengths = padded ? (offsets.slice(0, 1) - offsets.slice(0, 0, batch)).clamp(0, row_limit)
                                    : span_lengths(offsets, row_limit);
  const at::Tensor tile_counts = (lengths + (tiles.rows - 1)).div(tiles.rows, "floor");
  const at::Tensor tile_starts = at::cat({at::zeros({1}, offsets.options()), at::cumsum(tile_counts, 0)});
  const int64_t row_tiles = padded ? batch * ((row_limit + tiles.rows - 1) / tiles.rows)
                                   : (row_limit + tiles.rows - 1) / tiles.rows + batch;
  const int64_t col_tiles = (features + tiles.cols - 1) / tiles.cols;
  TORCH_CHECK(row_tiles < (int64_t{1} << 31) && col_tiles <= cuda::kMaxGridY, "padkern: grouped_linear's grid of ",
              row_tiles, " x ", col_tiles, " tiles exceeds CUDA's limits (2^31 - 1 x ", cuda::kMaxGridY, ")");
  cuda::GroupedLinearArgs args{};
  args.input = input.data_ptr();
  args.offsets = offsets.data_ptr<int64_t>();
  args.tile_starts = tile_starts.data_ptr<int64_t>();
  args.weight = weight.data_ptr();
  args.bias = bias.has_value() ? bias_contiguous.data_ptr() : nullptr;
  args.output = out.data_ptr();
  args.preactivation = save ? pre.data_ptr() : nullptr;
  args.batch = batch;
  args.features_in = input.size(-1);
  args.features_out = features;
  args.in_stride_b = padded ? input.stride(0) : 0;
  args.in_stride_t = padded ? input.stride(1) : input.stride(0);
  args.in_stride_k = input.stride(-1);
  args.out_stride_b = padded ? out.stride(0) : 0;
  args.out_stride_t = padded ? out.stride(1) : out.stride(0);
  args.w_stride_b = weight.dim() == 2 ? 0 : weight.stride(0);
  args.w_stride_k = weight.stride(1);  // [N, K] and [B, K, N] alike
  args.w_stride_n = weight.dim() == 2 ? weight.stride(0) : weight.stride(2);
  args.row_tiles = row_tiles;
  args.row_limit = row_limit;
  args.tiles = tiles;
  const int64_t element_size = input.element_size();
  args.input_vectorized = cuda::chunk_aligned(args.input, element_size, args.in_stride_k, args.features_in,
                                              {args.in_stride_b, args.in_stride_t});
  args.weight_vectorized = cuda::chunk_aligned(args.weight, element_size, args.w_stride_k, args.features_in,
                                               {args.w_stride_b, args.w_stride_n});
  args.padded = padded;
  args.activation = static_cast<int>(activation);
  C10_CUDA_CHECK(cuda::launch_grouped_linear(element_type(input), args, at::cuda::getCurrentCUDAStream()));
  return {out, pre};
}

at::Tensor ragged_outer_bmm_cuda(const at::Tensor& x, const at::Tensor& y, const at::Tensor& offsets) {
  check_outer_bmm_inputs(x, y, offsets);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor xc = x.contiguous(), yc = y.contiguous();
  const int64_t batch = offsets.size(0) - 1;
  at::Tensor out = at::empty({batch, x.size(1), y.size(1)}, x.options());
  cuda::OuterBmmArgs args{xc.data_ptr(), yc.data_ptr(), offsets.data_ptr<int64_t>(), out.data_ptr(), x.size(0), batch, x.size(1),
                          y.size(1), cuda::grouped_gemm_tiles(element_type(x), tf32_allowed(), x.size(1),
                                                              batch * x.size(1), y.size(1), sm_count())};
  const int64_t tiles = ((args.rows + args.tiles.rows - 1) / args.tiles.rows) *
                        ((args.cols + args.tiles.cols - 1) / args.tiles.cols);
  TORCH_CHECK(batch < (int64_t{1} << 31) && tiles <= cuda::kMaxGridY, "padkern: ragged_outer_bmm's output [", x.size(1),
              ", ", y.size(1), "] needs ", tiles, " tiles per sequence; CUDA's grid allows ", cuda::kMaxGridY);
  C10_CUDA_CHECK(cuda::launch_ragged_outer_bmm(element_type(x), args, at::cuda::getCurrentCUDAStream()));
  return out;
}

std::tuple<at::Tensor, at::Tensor> segment_reduce_cuda(const at::Tensor& values, const at::Tensor& offsets, int64_t mode) {
  check_segment_inputs(values, offsets, mode);
  const c10::cuda::CUDAGuard guard(values.device());
  const at::Tensor input = values.contiguous();
  const int64_t batch = offsets.size(0) - 1, features = values.size(1);
  at::Tensor out = at::empty({batch, features}, values.options());
  at::Tensor argmax = at::empty({mode == 2 ? batch : 0, features}, values.options().dtype(at::kLong));
  cuda::SegmentArgs args{input.data_ptr(), offsets.data_ptr<int64_t>(), out.data_ptr(),
                         mode == 2 ? argmax.data_ptr<int64_t>() : nullptr, values.size(0), batch, features,
                         static_cast<int>(mode)};
  C10_CUDA_CHECK(cuda::launch_segment_reduce(element_type(values), args, at::cuda::getCurrentCUDAStream()));
  return {out, argmax};
}

at::Tensor segment_softmax_cuda(const at::Tensor& values, const at::Tensor& offsets) {
  check_segment_inputs(values, offsets, 0);
  const c10::cuda::CUDAGuard guard(values.device());
  const at::Tensor input = values.contiguous();
  at::Tensor out = at::empty_like(input);
  cuda::SegmentArgs args{input.data_ptr(), offsets.data_ptr<int64_t>(), out.data_ptr(), nullptr, values.size(0),
                         offsets.size(0) - 1, values.size(1), 0};
  C10_CUDA_CHECK(cuda::launch_segment_softmax(element_type(values), args, at::cuda::getCurrentCUDAStream()));
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(padkern, CUDA, m) {
  m.impl("grouped_linear", &grouped_linear_cuda);
  m.impl("ragged_outer_bmm", &ragged_outer_bmm_cuda);
  m.impl("segment_reduce", &segment_reduce_cuda);
  m.impl("segment_softmax", &segment_softmax_cuda);
}

}  // namespace padkern
