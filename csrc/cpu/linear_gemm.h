// The GEMM behind the CPU kernels' shared-weight matmuls.
#pragma once
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <exception>
#include <optional>

namespace padkern {
namespace cpu {

// rows @ weight^T with weight [N, K] in torch.nn.functional.linear's convention, for
// the CPU kernels' GEMMs. float32 goes through oneDNN's linear (torch's
// mkldnn::_linear_pointwise, looked up at run time) where torch has it: on this
// library's shapes (a recurrence step's few rows; a sequence's rows) it ran about 2x
// faster than the BLAS behind at::mm on the 2-core AVX-512 machine of README's
// figures. Otherwise, and for other dtypes, at::mm.
//
// A recurrence multiplies by the same weight at every step: given `repeated_rows` (the most
// rows a call will have), the weight is put once into oneDNN's own blocked layout
// (mkldnn::_reorder_linear_weight); given a plain weight, oneDNN's kernel repacks it on every
// call. On a Zen 5 core that made a [8..64, 256] x [256, 1024] step 1.15-1.8x faster.
class LinearGemm {
 public:
  explicit LinearGemm(const at::Tensor& weight, std::optional<int64_t> repeated_rows = std::nullopt)
      : weight_(weight.contiguous()) {
    if (weight_.scalar_type() != at::kFloat) return;
    const auto handle = c10::Dispatcher::singleton().findOp({"mkldnn::_linear_pointwise", ""});
    if (!handle.has_value()) return;
    try {
      linear_ = handle->typed<LinearSignature>();
    } catch (const c10::Error&) {
      linear_.reset();  // a torch whose schema differs: use at::mm
      return;
    }
    // A packed weight is an MkldnnCPU tensor: only where the linear has a kernel for one.
    const bool takes_packed = handle->hasKernelForDispatchKey(c10::DispatchKey::MkldnnCPU);
    if (repeated_rows.has_value() && *repeated_rows > 0 && takes_packed) pack_for(*repeated_rows);
  }

  // A fresh [rows, N] tensor: rows @ weight^T (+ bias [N], fused into the GEMM).
  at::Tensor product(const at::Tensor& rows, const std::optional<at::Tensor>& bias = std::nullopt) const {
    if (uses_onednn(rows.size(0))) {
      return linear_->call(rows.contiguous(), packed_.defined() ? packed_ : weight_, bias, "none",
                           c10::List<std::optional<at::Scalar>>(), std::nullopt);
    }
    return bias.has_value() ? at::addmm(*bias, rows, weight_.t()) : at::mm(rows, weight_.t());
  }

  // out[:n] = beta * out[:n] + rows @ weight^T  (n = rows.size(0); out may be a view).
  void multiply(const at::Tensor& rows, double beta, at::Tensor out) const {
    const int64_t count = rows.size(0);
    if (count == 0) return;
    at::Tensor target = out.narrow(0, 0, count);
    if (uses_onednn(count)) {
      beta == 0.0 ? target.copy_(product(rows)) : target.add_(product(rows));
    } else if (beta == 0.0) {
      at::mm_out(target, rows, weight_.t());
    } else {
      target.addmm_(rows, weight_.t(), beta, 1.0);
    }
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

  // Leaves packed_ undefined (the plain weight is used) where torch lacks the reorder op, where
  // even `rows` rows stay below the oneDNN threshold, or where the reorder fails.
  void pack_for(int64_t rows) {
    const auto handle = c10::Dispatcher::singleton().findOp({"mkldnn::_reorder_linear_weight", ""});
    if (!handle.has_value() || !uses_onednn(rows)) return;
    try {
      packed_ = handle->typed<at::Tensor(const at::Tensor&, std::optional<int64_t>)>().call(weight_, rows);
    } catch (const std::exception&) {  // c10::Error, or oneDNN's own errors and bad_alloc
      packed_ = at::Tensor();
    }
  }

  at::Tensor weight_;
  at::Tensor packed_;  // weight_ in oneDNN's blocked layout, or undefined
  std::optional<c10::TypedOperatorHandle<LinearSignature>> linear_;
};

}  // namespace cpu
}  // namespace padkern
