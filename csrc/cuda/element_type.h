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

// Whether float32 matmuls may round their operands to TF32 (torch.backends.cuda.matmul.
// allow_tf32 / set_float32_matmul_precision): padkern's tensor-core paths follow torch's switch.
inline bool tf32_allowed() { return at::globalContext().allowTF32CuBLAS(); }

}  // namespace padkern
