// Registers the CUDA kernels of padkern::ragged_conv1d and its backward: the plan
// (padkern/conv1d_plan.h, shared with the CPU) with csrc/cuda/conv1d.cu's kernels and
// cuBLAS (at::bmm) for the GEMMs. Offsets' contents are not read on the host (no
// synchronisation); the kernels clamp every sequence into its tensor instead.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "element_type.h"
#include "padkern/conv1d_kernels.h"
#include "padkern/conv1d_plan.h"

namespace padkern {
namespace {

// Tokens per depthwise weight-gradient partial: enough threads (chunks x k x C) to fill
// a GPU for L in the thousands, few enough partials that summing them is noise.
constexpr int64_t kWeightGradChunkRows = 256;

void check_rows(const at::Tensor& tensor, int64_t rows, int64_t cols, const char* name) {
  TORCH_CHECK(tensor.is_contiguous() && tensor.dim() == 2 && tensor.size(0) == rows && tensor.size(1) == cols,
              "padkern: ", name, " must be a contiguous [", rows, ", ", cols, "] tensor, got ", tensor.sizes(),
              " with strides ", tensor.strides());
}

cuda::ConvRowsArgs rows_args(const at::Tensor& offsets, int64_t rows, ConvTaps taps) {
  return {offsets.data_ptr<int64_t>(), rows, offsets.size(0) - 1, taps};
}

const void* bias_pointer(const c10::optional<at::Tensor>& bias, const at::Tensor& like) {
  if (!bias.has_value()) return nullptr;
  TORCH_CHECK(bias->is_contiguous() && bias->numel() == like.size(1), "padkern: bias must be contiguous [",
              like.size(1), "]");
  return bias->data_ptr();
}

struct CudaKernels {
  // Grouped convolutions take the GEMM route (cuBLAS) on a GPU.
  static constexpr bool kHasGroupedDirect = false;
  // Contents are never read on the host here: see the file comment.
  static void check_offsets(const at::Tensor&, int64_t) {}

  static void depthwise(const at::Tensor& x, const at::Tensor& offsets, const at::Tensor& taps_weight,
                        const c10::optional<at::Tensor>& bias, ConvTaps taps, at::Tensor& out) {
    const int64_t rows = x.size(0), channels = x.size(1);
    check_rows(x, rows, channels, "values");
    check_rows(out, rows, channels, "out");
    TORCH_CHECK(taps_weight.is_contiguous() && taps_weight.size(0) == taps.count && taps_weight.size(1) == channels &&
                    taps_weight.scalar_type() == at::toOpMathType(x.scalar_type()),
                "padkern: depthwise taps weight must be contiguous [k, C] in the accumulation dtype");
    cuda::DepthwiseArgs args{rows_args(offsets, rows, taps), x.data_ptr(), taps_weight.data_ptr(),
                             bias_pointer(bias, out), out.data_ptr(), channels};
    C10_CUDA_CHECK(cuda::launch_conv_depthwise(element_type(x), args, at::cuda::getCurrentCUDAStream()));
  }

  static at::Tensor depthwise_weight_grad(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& offsets,
                                          ConvTaps taps) {
    const int64_t rows = x.size(0), channels = x.size(1);
    check_rows(grad, rows, channels, "grad_output");
    check_rows(x, rows, channels, "values");
    const int64_t chunks = (rows + kWeightGradChunkRows - 1) / kWeightGradChunkRows;
    at::Tensor partials = at::empty({chunks, taps.count, channels}, x.options().dtype(at::toOpMathType(x.scalar_type())));
    cuda::DepthwiseWeightGradArgs args{rows_args(offsets, rows, taps), grad.data_ptr(), x.data_ptr(),
                                       partials.data_ptr(), channels, kWeightGradChunkRows, chunks};
    C10_CUDA_CHECK(cuda::launch_conv_depthwise_weight_grad(element_type(x), args, at::cuda::getCurrentCUDAStream()));
    // No atomics: each chunk owns its partial, summed in a fixed order (deterministic).
    return partials.sum(0);
  }

  static void gather_taps(const at::Tensor& y, const at::Tensor& offsets, ConvTaps taps,
                          const c10::optional<at::Tensor>& bias, at::Tensor& out) {
    const int64_t groups = y.size(0), rows = y.size(1), per_group = y.size(2) / taps.count;
    TORCH_CHECK(y.is_contiguous() && y.dim() == 3 && y.size(2) == taps.count * per_group,
                "padkern: tap products must be contiguous [G, L, k * N], got ", y.sizes());
    check_rows(out, rows, groups * per_group, "out");
    cuda::GatherTapsArgs args{rows_args(offsets, rows, taps), y.data_ptr(), bias_pointer(bias, out), out.data_ptr(),
                              groups, per_group};
    C10_CUDA_CHECK(cuda::launch_conv_gather_taps(element_type(y), args, at::cuda::getCurrentCUDAStream()));
  }

  static at::Tensor shifted_rows(const at::Tensor& x, const at::Tensor& offsets, int64_t shift) {
    check_rows(x, x.size(0), x.size(1), "values");
    at::Tensor out = at::empty_like(x);
    cuda::ShiftedRowsArgs args{rows_args(offsets, x.size(0), ConvTaps{shift, 0, 1}), x.data_ptr(), out.data_ptr(),
                               x.size(1)};
    C10_CUDA_CHECK(cuda::launch_conv_shifted_rows(element_type(x), args, at::cuda::getCurrentCUDAStream()));
    return out;
  }
};

at::Tensor ragged_conv1d_cuda(const at::Tensor& values, const at::Tensor& offsets, const at::Tensor& weight,
                              const c10::optional<at::Tensor>& bias, int64_t left_pad, int64_t dilation, int64_t groups) {
  const c10::cuda::CUDAGuard guard(values.device());
  return conv1d_forward<CudaKernels>(values, offsets, weight, bias, left_pad, dilation, groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ragged_conv1d_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& values, const at::Tensor& offsets, const at::Tensor& weight,
    int64_t left_pad, int64_t dilation, int64_t groups, std::array<bool, 3> output_mask) {
  const c10::cuda::CUDAGuard guard(values.device());
  return conv1d_backward<CudaKernels>(grad_output, values, offsets, weight, left_pad, dilation, groups, output_mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(padkern, CUDA, m) {
  m.impl("ragged_conv1d", &ragged_conv1d_cuda);
  m.impl("ragged_conv1d_backward", &ragged_conv1d_backward_cuda);
}

}  // namespace padkern
