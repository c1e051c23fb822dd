// CPU kernels of padkern::ragged_attention and its backward (FlashAttention-2's scheme on
// tiles): forward walks each (sequence, head, query tile) over its key tiles with an online
// softmax, keeping only the log-sum-exp of each row; backward recomputes each tile's scores
// from it. The tiles' products are GEMMs on oneDNN's brgemm micro-kernel in float32
// (attention_brgemm.h) and BLAS GEMMs otherwise (attention_blas.h); no tile reaches past its
// sequence, so the batch's padding costs nothing. float32 and float64 run natively,
// float16/bfloat16 on float32 copies (as the other CPU kernels), with float32 accumulation
// throughout. Tile maths shared by both: attention_tiles.h.
//
// Shapes: q [L, Hq, D], k and v [Lk, Hkv, D] row-major; query head h reads key/value head
// h / (Hq / Hkv); lse [L, Hq] float32.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <tuple>
#include <type_traits>

#include "attention_blas.h"
#include "attention_brgemm.h"
#include "attention_tiles.h"
#include "padkern/tensor_checks.h"
#include "reduced_precision.h"

namespace padkern {
namespace cpu {
namespace {

using attention::Problem;

// Every (sequence, head, query tile) over its key tiles; float32 on brgemm (attention_brgemm.h).
template <typename T>
void forward_kernel(const Problem& p, const T* q, const T* k, const T* v, T* out, float* lse) {
  const attention::ForwardItems items = attention::forward_items(p);
  if constexpr (std::is_same_v<T, float>) {
    if (p.dim > 0) {  // (with no features there are no products: the plain tiles' loops)
      attention::parallel_ranges_by_cost(items.cost_prefix, [&](int64_t first, int64_t last) {
        attention::forward_range_brgemm(p, items, first, last, q, k, v, out, lse);
      });
      return;
    }
  }
  attention::parallel_by_cost(items.cost_prefix, [&](int64_t item) {
    attention::forward_tile_blas<T>(p, attention::forward_item(p, items, item), q, k, v, out, lse);
  });
}

// Every (sequence, key/value head). Each item writes every gradient row it owns (its query heads'
// rows of grad_q, its keys' rows of grad_k and grad_v), so the gradients need no zeroing first.
template <typename T>
void backward_kernel(const Problem& p, const T* grad_out, const T* q, const T* k, const T* v, const T* out,
                     const float* lse, T* grad_q, T* grad_k, T* grad_v) {
  attention::parallel_by_cost(attention::backward_costs(p), [&](int64_t item) {
    const int64_t b = item / p.kv_heads, g = item % p.kv_heads;
    if constexpr (std::is_same_v<T, float>) {
      if (p.dim > 0) {
        attention::backward_item_brgemm(p, b, g, grad_out, q, k, v, out, lse, grad_q, grad_k, grad_v);
        return;
      }
    }
    attention::backward_item_blas<T>(p, b, g, grad_out, q, k, v, out, lse, grad_q, grad_k, grad_v);
  });
}

Problem problem_of(const at::Tensor& q, const at::Tensor& k, const at::Tensor& offsets, const at::Tensor& kv_offsets,
                   bool causal, double scale) {
  return Problem{offsets.size(0) - 1, q.size(1), k.size(1), q.size(2), offsets.data_ptr<int64_t>(),
                 kv_offsets.data_ptr<int64_t>(), causal, scale};
}

// q [L, Hq, D], k and v [Lk, Hkv, D], all row-major and of one dtype; Hq a multiple of Hkv;
// offsets and kv_offsets [B+1] meeting the offsets contract against L and Lk.
void check_attention_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& offsets,
                            const at::Tensor& kv_offsets) {
  TORCH_CHECK(q.dim() == 3 && k.dim() == 3, "padkern: q must be [L, Hq, D] and k [Lk, Hkv, D], got ", q.sizes(),
              " and ", k.sizes());
  check_same_kind(k, q, "k");
  check_same_kind(v, q, "v");
  check_shape(v, k.sizes(), "v");
  TORCH_CHECK(k.size(2) == q.size(2) && k.size(1) >= 1 && q.size(1) % k.size(1) == 0,
              "padkern: k must be [Lk, Hkv, D] with q's D and Hkv dividing Hq, got q ", q.sizes(), " and k ", k.sizes());
  for (const at::Tensor* t : {&q, &k, &v})
    TORCH_CHECK(t->is_contiguous(), "padkern: q, k and v must be row-major (contiguous), got strides ", t->strides());
  check_offsets_layout(offsets, q.device());
  check_offsets_layout(kv_offsets, q.device());
  TORCH_CHECK(kv_offsets.size(0) == offsets.size(0), "padkern: kv_offsets must have offsets' B+1 = ", offsets.size(0),
              " entries, got ", kv_offsets.size(0));
  check_offsets_contents(offsets, q.size(0));
  check_offsets_contents(kv_offsets, k.size(0));
}

std::tuple<at::Tensor, at::Tensor> attention_forward_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                         const at::Tensor& offsets, const at::Tensor& kv_offsets,
                                                         bool causal, double scale) {
  check_attention_inputs(q, k, v, offsets, kv_offsets);
  if (is_reduced_float(q)) {
    auto [out, lse] = attention_forward_cpu(widened(q), widened(k), widened(v), offsets, kv_offsets, causal, scale);
    return {out.to(q.scalar_type()), lse};
  }
  at::Tensor out = at::empty_like(q);
  at::Tensor lse = at::empty({q.size(0), q.size(1)}, q.options().dtype(at::kFloat));
  const Problem p = problem_of(q, k, offsets, kv_offsets, causal, scale);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "padkern_ragged_attention_cpu", [&] {
    forward_kernel<scalar_t>(p, q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
                             out.data_ptr<scalar_t>(), lse.data_ptr<float>());
  });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const at::Tensor& offsets, const at::Tensor& kv_offsets, bool causal, double scale) {
  check_attention_inputs(q, k, v, offsets, kv_offsets);
  for (const at::Tensor* t : {&grad_out, &out}) {
    check_same_kind(*t, q, "grad_out and out");
    check_shape(*t, q.sizes(), "grad_out and out");
    TORCH_CHECK(t->is_contiguous(), "padkern: grad_out and out must be row-major (contiguous), got strides ",
                t->strides());
  }
  TORCH_CHECK(lse.scalar_type() == at::kFloat && lse.device() == q.device() && lse.is_contiguous(),
              "padkern: lse must be contiguous float32 on ", q.device(), ", got ", lse.scalar_type(), " on ",
              lse.device());
  check_shape(lse, {q.size(0), q.size(1)}, "lse");
  if (is_reduced_float(q)) {
    auto [gq, gk, gv] = attention_backward_cpu(widened(grad_out), widened(q), widened(k), widened(v), widened(out),
                                               lse, offsets, kv_offsets, causal, scale);
    return {gq.to(q.scalar_type()), gk.to(q.scalar_type()), gv.to(q.scalar_type())};
  }
  at::Tensor grad_q = at::empty_like(q), grad_k = at::empty_like(k), grad_v = at::empty_like(v);
  const Problem p = problem_of(q, k, offsets, kv_offsets, causal, scale);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "padkern_ragged_attention_backward_cpu", [&] {
    backward_kernel<scalar_t>(p, grad_out.data_ptr<scalar_t>(), q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(),
                              v.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), lse.data_ptr<float>(),
                              grad_q.data_ptr<scalar_t>(), grad_k.data_ptr<scalar_t>(), grad_v.data_ptr<scalar_t>());
  });
  return {grad_q, grad_k, grad_v};
}

}  // namespace

TORCH_LIBRARY_IMPL(padkern, CPU, m) {
  m.impl("ragged_attention", &attention_forward_cpu);
  m.impl("ragged_attention_backward", &attention_backward_cpu);
}

}  // namespace cpu
}  // namespace padkern
