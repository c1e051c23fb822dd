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
  TORCH_CHECK(values.is_cuda(), "padkern: values must be a CUDA tensor, got ", values.device());
  const c10::cuda::CUDAGuard guard(values.device());
  at::Tensor padded = empty_padded(values, offsets, total_length, batch_first);
  const PaddingLayout layout = make_padding_layout(values, offsets, padded, batch_first);
  // The padding element's bytes in the values' dtype, read on the host.
  const at::Tensor fill = at::scalar_tensor(padding_value, values.options().device(at::kCPU));
  C10_CUDA_CHECK(cuda::launch_pad(layout, values.data_ptr(), padded.data_ptr(), fill.data_ptr(),
                                  static_cast<int>(values.element_size()), at::cuda::getCurrentCUDAStream()));
  return padded;
}

at::Tensor unpad_cuda(const at::Tensor& padded, const at::Tensor& offsets, int64_t total_tokens, bool batch_first) {
  TORCH_CHECK(padded.is_cuda(), "padkern: padded must be a CUDA tensor, got ", padded.device());
  const c10::cuda::CUDAGuard guard(padded.device());
  at::Tensor values = empty_values(padded, offsets, total_tokens);
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
