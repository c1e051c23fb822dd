// Host entry points of the CUDA pad/unpad kernels (csrc/cuda/padding.cu).
#pragma once
#include <cuda_runtime.h>

#include "padkern/ragged_layout.h"

namespace padkern {
namespace cuda {

// padded[b, t] = values[offsets[b] + t] for t < length_b, else the padding element
// (`fill_element`, `element_size` bytes). `layout.offsets` is a device pointer.
cudaError_t launch_pad(const PaddingLayout& layout, const void* values, void* padded, const void* fill_element,
                       int element_size, cudaStream_t stream);

// values[offsets[b] + t] = padded[b, t] for every real token; zeros for a token past T
// (possible only with invalid offsets).
cudaError_t launch_unpad(const PaddingLayout& layout, const void* padded, void* values, int64_t total_tokens,
                         cudaStream_t stream);

}  // namespace cuda
}  // namespace padkern
