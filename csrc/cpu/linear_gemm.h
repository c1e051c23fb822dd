// The GEMM behind the CPU kernels' shared-weight matmuls.
#pragma once
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <optional>

namespace padkern {
namespace cpu {

// rows @ weight^T with weight [N, K] in torch.nn.functional.linear's convention, for the
// CPU linear kernels' GEMMs. float32 goes through oneDNN's linear (torch's
// mkldnn::_linear_pointwise, looked up at run time) where torch has it: on this library's
// shapes (all L rows; a sequence's rows) it ran about 2x faster than the BLAS behind at::mm
// on the 2-core AVX-512 machine of README's figures. Otherwise, and for other dtypes,
// at::mm. (The recurrences' per-step GEMM is step_gemm.h.)
class LinearGemm {
 public:
  explicit LinearGemm(const at::Tensor& weight) : weight_(weight.contiguous()) {
    if (weight_.scalar_type() != at::kFloat) return;
    const auto handle = c10::Dispatcher::singleton().findOp({"mkldnn::_linear_pointwise", ""});
    if (!handle.has_value()) return;
    try {
      linear_ = handle->typed<LinearSignature>();
    } catch (const c10::Error&) {
      linear_.reset();  // a torch whose schema differs: use at::mm
    }
  }

  // A fresh [rows, N] tensor: rows @ weight^T (+ bias [N], fused into the GEMM).
  at::Tensor product(const at::Tensor& rows, const std::optional<at::Tensor>& bias = std::nullopt) const {
    if (uses_onednn(rows.size(0))) {
      return linear_->call(rows.contiguous(), weight_, bias, "none",
                           c10::List<std::optional<at::Scalar>>(), std::nullopt);
    }
    return bias.has_value() ? at::addmm(*bias, rows, weight_.t()) : at::mm(rows, weight_.t());
  }

 private:
  // Below about 2M multiply-adds oneDNN's per-call cost outweighs its faster kernel (measured
  // on README's machine: [8, 128] x [128, 512] took 13 us through at::mm, 18 us through oneDNN).
  static constexpr int64_t kOneDnnMinimumMacs = int64_t{1} << 21;
  using LinearSignature = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                     c10::string_view, c10::List<std::optional<at::Scalar>>,
                                     std::optional<c10::string_view>);
  bool uses_onednn(int64_t rows) const {
    return linear_.has_value() && rows * weight_.size(0) * weight_.size(1) >= kOneDnnMinimumMacs;
  }

  at::Tensor weight_;
  std::optional<c10::TypedOperatorHandle<LinearSignature>> linear_;
};

}  // namespace cpu
}  // namespace padkern
