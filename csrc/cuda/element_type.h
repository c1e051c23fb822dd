// Maps an ATen dtype to the element types the CUDA kernels are compiled for.
#pragma once
#include <ATen/ATen.h>

#include "padkern/rnn_kernels.h"

namespace padkern {

inline cuda::ElementType element_type(const at::Tensor& tensor) {
  switch (tensor.scalar_type()) {
    case at::kFloat: return cuda::ElementType::Float32;
    case at::kDouble: return cuda::ElementType::Float64;
    case at::kHalf: return cuda::ElementType::Float16;
    case at::kBFloat16: return cuda::ElementType::BFloat16;
    default: TORCH_CHECK(false, "padkern: CUDA kernels support float32, float64, float16 and bfloat16, got ", tensor.scalar_type());
  }
}

}  // namespace padkern
