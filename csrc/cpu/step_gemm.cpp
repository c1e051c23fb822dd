// padkern::step_gemm: the CPU recurrences' per-step GEMM (step_gemm.h) as an op of its own,
// so that its tests reach row blocks and panel edges directly and the performance guard can
// count it among the engines of a dense GEMM floor.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "padkern/tensor_checks.h"
#include "step_gemm.h"

namespace padkern {
namespace cpu {
namespace {

at::Tensor step_gemm_cpu(const at::Tensor& rows, const at::Tensor& weight,
                         const c10::optional<at::Tensor>& accumulate) {
  TORCH_CHECK(rows.dim() == 2 && weight.dim() == 2 && rows.size(1) == weight.size(1),
              "padkern: step_gemm needs rows [M, K] and weight [N, K], got ", rows.sizes(), " and ", weight.sizes());
  TORCH_CHECK(rows.scalar_type() == at::kFloat || rows.scalar_type() == at::kDouble,
              "padkern: step_gemm takes float32 or float64, got ", rows.scalar_type());
  check_same_kind(weight, rows, "weight");
  at::Tensor out;
  if (accumulate.has_value()) {
    check_same_kind(*accumulate, rows, "accumulate");
    check_shape(*accumulate, {rows.size(0), weight.size(0)}, "accumulate");
    out = accumulate->clone(at::MemoryFormat::Contiguous);
  } else {
    out = at::empty({rows.size(0), weight.size(0)}, rows.options());
  }
  StepGemm(weight).multiply(rows.contiguous(), rows.size(0), accumulate.has_value(), out);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(padkern, CPU, m) { m.impl("step_gemm", &step_gemm_cpu); }

}  // namespace cpu
}  // namespace padkern
