// Registers the CUDA kernels of padkern::pad / padkern::unpad.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "padkern/aten_padding.h"
#include "padkern/padding_kernels.h"

namespace padkern {
namespace {

at::Tensor pad_cuda(const at::Tensor& values, const at::Tensor& offsets, int64_t total_length, double padding_value,
                    bool batch_first) {
  const c10::cuda::CUDAGuard guard(values.device());
  TORCH_CHECK(total_length >= 0, "padkern: total_length must be non-negative, got ", total_length);
  at::Tensor padded = empty_padded(values, offsets.size(0) - 1, total_length, batch_first);
  const PaddingLayout layout = make_padding_layout(values, offsets, padded, batch_first);
  // The padding element's bytes in the values' dtype, read on the host.
  const at::Tensor fill = at::scalar_tensor(padding_value, values.options().device(at::kCPU));
  C10_CUDA_CHECK(cuda::launch_pad(layout, values.data_ptr(), padded.data_ptr(), fill.data_ptr(),
                                  static_cast<int>(values.element_size()), at::cuda::getCurrentCUDAStream()));
  return padded;
}

at::Tensor unpad_cuda(const at::Tensor& padded, const at::Tensor& offsets, int64_t total_tokens, bool batch_first) {
  const c10::cuda::CUDAGuard guard(padded.device());
  TORCH_CHECK(total_tokens >= 0, "padkern: total_tokens must be non-negative, got ", total_tokens);
  TORCH_CHECK(offsets.numel() > 1 || total_tokens == 0, "padkern: an empty batch has no tokens, got total_tokens ",
              total_tokens);
  at::Tensor values = at::empty({total_tokens, padded.size(2)}, padded.options());
  const PaddingLayout layout = make_padding_layout(values, offsets, padded, batch_first);
  C10_CUDA_CHECK(cuda::launch_unpad(layout, padded.data_ptr(), values.data_ptr(), total_tokens,
                                    at::cuda::getCurrentCUDAStream()));
  return values;
}

}  // namespace

TORCH_LIBRARY_IMPL(padkern, CUDA, m) {
  m.impl("pad", &pad_cuda);
  m.impl("unpad", &unpad_cuda);
}

}  // namespace padkern
