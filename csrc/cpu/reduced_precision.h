// float16/bfloat16 on the CPU recurrences: the float32 kernels run on widened copies, so
// the state and every accumulation stay float32, as in the GPU kernels; inputs are
// widened once per call and outputs rounded once. The recurrences are bound by the
// per-step GEMM on few rows and by the gate loops, neither of which a 16-bit storage
// type speeds up on the CPU; the input projection over all tokens (half the FLOPs) runs
// in the reduced type through grouped_linear, where oneDNN uses AVX-512 BF16 or AMX.
#pragma once
#include <ATen/ATen.h>

#include <tuple>

namespace padkern {
namespace cpu {

inline bool is_reduced_float(const at::Tensor& tensor) {
  return tensor.scalar_type() == at::kHalf || tensor.scalar_type() == at::kBFloat16;
}

inline at::Tensor widened(const at::Tensor& tensor) {
  return tensor.is_floating_point() ? tensor.to(at::kFloat) : tensor;  // offsets stay int64
}
template <typename Flag>
Flag widened(Flag flag) {
  return flag;
}

// kernel(args widened to float32), each output rounded back to `storage`.
template <typename Kernel, typename... Args>
auto run_in_float32(Kernel kernel, at::ScalarType storage, const Args&... args) {
  return std::apply([&](const auto&... outputs) { return std::make_tuple(outputs.to(storage)...); },
                    kernel(widened(args)...));
}

}  // namespace cpu
}  // namespace padkern
