// CPU kernels of padkern::ragged_attention and its backward (FlashAttention-2's scheme on
// tiles): forward walks each (sequence, head, query tile) over its key tiles with an online
// softmax, keeping only the log-sum-exp of each row; backward recomputes each tile's scores
// from it. The tiles' products are BLAS GEMMs (tile_gemm.h); no tile reaches past its
// sequence, so padding costs nothing. float32 and float64 run natively, float16/bfloat16 on
// float32 copies (as the other CPU kernels), with float32 accumulation throughout.
//
// Shapes: q [L, Hq, D], k and v [Lk, Hkv, D] row-major; query head h reads key/value head
// h / (Hq / Hkv); lse [L, Hq] float32.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

#include "padkern/attention_tile.h"
#include "padkern/softmax_rows.h"
#include "padkern/tensor_checks.h"
#include "reduced_precision.h"
#include "tile_gemm.h"

namespace padkern {
namespace cpu {
namespace {

// 64 query rows x 256 keys: a score tile of 64 KiB (float32) stays in L2 beside the query
// and key tiles, and each GEMM is long enough for BLAS to run near its peak.
constexpr int64_t kQueryTile = 64, kKeyTile = 256;

struct Problem {
  int64_t batch, heads, kv_heads, dim;
  const int64_t* offsets;
  const int64_t* kv_offsets;
  bool causal;
  double scale;
  int64_t group() const { return heads / kv_heads; }
  int64_t query_stride() const { return heads * dim; }
  int64_t key_stride() const { return kv_heads * dim; }
  // Keys query rows [first, first + rows) of sequence b see, counted from its first key.
  int64_t visible_keys(int64_t b, int64_t first, int64_t rows) const {
    const int64_t keys = kv_offsets[b + 1] - kv_offsets[b];
    return causal ? std::min(keys, first + rows) : keys;
  }
};

// Runs work(item) for items [0, n) with cost prefix sums `prefix` [n + 1], in a few parts
// of about equal cost per thread: sequences differ in length (and causal tiles in width),
// so equal item counts would leave one thread with most of the work.
template <typename Work>
void parallel_by_cost(const std::vector<int64_t>& prefix, const Work& work) {
  const int64_t items = static_cast<int64_t>(prefix.size()) - 1;
  if (items <= 0) return;
  const int64_t total = std::max<int64_t>(prefix.back(), 1);
  const int64_t parts = std::min<int64_t>(items, 4 * at::get_num_threads());
  auto first_of = [&](int64_t part) {
    if (part >= parts) return items;
    const int64_t target = total * part / parts;
    return static_cast<int64_t>(std::lower_bound(prefix.begin(), prefix.end() - 1, target) - prefix.begin());
  };
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = first_of(begin); item < first_of(end); ++item) work(item);
  });
}

// Masks the keys after each query (causal) in a [rows, cols] score tile whose rows are
// queries first.. and columns keys key0..: key j is seen by query i when j <= i.
template <typename T>
void mask_future(T* scores, int64_t rows, int64_t cols, int64_t first, int64_t key0) {
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t seen = std::clamp<int64_t>(first + i - key0 + 1, 0, cols);
    std::fill(scores + i * cols + seen, scores + (i + 1) * cols, -std::numeric_limits<T>::infinity());
  }
}

// One tile's scores of a row into the online softmax: row[j] becomes exp(row[j] - peak'),
// total is rescaled to the new peak' and gets their sum; returns the rescale factor
// exp(peak - peak') the row's accumulators need. A row of -inf so far keeps 0 as its
// reference point: exp(-inf - 0) = 0, not NaN.
template <typename T>
T online_softmax_row(T* row, int64_t cols, T& peak, T& total) {
  const T neg_inf = -std::numeric_limits<T>::infinity();
  const T new_peak = std::max(peak, row_peak(row, cols));
  const T shift = new_peak == neg_inf ? T(0) : new_peak;
  const T rescale = std::exp(peak - shift);
  const T sum = exp_shifted_row(row, cols, shift);
  total = total * rescale + sum;
  peak = new_peak;
  return rescale;
}

template <typename T>
void forward_kernel(const Problem& p, const T* q, const T* k, const T* v, T* out, float* lse) {
  // Items: (sequence, query tile, head), tiles of one sequence adjacent.
  std::vector<int64_t> tile_prefix(p.batch + 1, 0), cost_prefix{0};
  for (int64_t b = 0; b < p.batch; ++b) {
    const int64_t rows = p.offsets[b + 1] - p.offsets[b], tiles = (rows + kQueryTile - 1) / kQueryTile;
    tile_prefix[b + 1] = tile_prefix[b] + tiles;
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t tile_rows = std::min(kQueryTile, rows - t * kQueryTile);
      for (int64_t h = 0; h < p.heads; ++h)
        cost_prefix.push_back(cost_prefix.back() + tile_rows * (p.visible_keys(b, t * kQueryTile, tile_rows) + 8));
    }
  }
  const int64_t dim = p.dim, ldq = p.query_stride(), ldk = p.key_stride();
  const T scale = static_cast<T>(p.scale), neg_inf = -std::numeric_limits<T>::infinity();
  parallel_by_cost(cost_prefix, [&](int64_t item) {
    const int64_t tile_index = item / p.heads, h = item % p.heads;
    const int64_t b = std::upper_bound(tile_prefix.begin(), tile_prefix.end(), tile_index) - tile_prefix.begin() - 1;
    const int64_t first = (tile_index - tile_prefix[b]) * kQueryTile;
    const int64_t rows = std::min(kQueryTile, p.offsets[b + 1] - p.offsets[b] - first);
    const int64_t keys = p.visible_keys(b, first, rows), g = h / p.group();
    const T* q_tile = q + (p.offsets[b] + first) * ldq + h * dim;
    const T* k_seq = k + p.kv_offsets[b] * ldk + g * dim;
    const T* v_seq = v + p.kv_offsets[b] * ldk + g * dim;
    // Per-item scratch: 64 x 256 scores and 64 x D accumulators, allocated once per item.
    std::vector<T> scores(kQueryTile * kKeyTile), acc(rows * dim, T(0)), peak(rows, neg_inf), total(rows, T(0));
    for (int64_t key0 = 0; key0 < keys; key0 += kKeyTile) {
      const int64_t cols = std::min(kKeyTile, keys - key0);
      T* s = scores.data();
      gemm_row_major<T>(false, true, rows, cols, dim, scale, q_tile, ldq, k_seq + key0 * ldk, ldk, T(0), s, cols);
      if (p.causal) mask_future(s, rows, cols, first, key0);
      for (int64_t i = 0; i < rows; ++i) {
        const T rescale = online_softmax_row(s + i * cols, cols, peak[i], total[i]);
        if (rescale != T(1)) {
          T* acc_row = acc.data() + i * dim;
          for (int64_t d = 0; d < dim; ++d) acc_row[d] *= rescale;
        }
      }
      gemm_row_major<T>(false, false, rows, dim, cols, T(1), s, cols, v_seq + key0 * ldk, ldk, T(1), acc.data(), dim);
    }
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t token = p.offsets[b] + first + i;
      // total is 0 only where every weight is 0 (no key, or every score -inf): out 0 there.
      const T divisor = total[i] == T(0) ? T(1) : total[i];
      T* out_row = out + token * ldq + h * dim;
      for (int64_t d = 0; d < dim; ++d) out_row[d] = acc[i * dim + d] / divisor;
      const T shift = peak[i] == neg_inf ? T(0) : peak[i];
      lse[token * p.heads + h] = static_cast<float>(shift + std::log(total[i]));
    }
  });
}

template <typename T>
void backward_kernel(const Problem& p, const T* grad_out, const T* q, const T* k, const T* v, const T* out,
                     const float* lse, T* grad_q, T* grad_k, T* grad_v) {
  // Items: (sequence, key/value head). An item owns its keys' and its query heads' gradient
  // rows, so nothing is shared between threads and the sums run in one fixed order.
  std::vector<int64_t> cost_prefix{0};
  for (int64_t b = 0; b < p.batch; ++b) {
    const int64_t rows = p.offsets[b + 1] - p.offsets[b];
    for (int64_t g = 0; g < p.kv_heads; ++g)
      cost_prefix.push_back(cost_prefix.back() + p.group() * rows * (p.visible_keys(b, 0, rows) + 8));
  }
  const int64_t dim = p.dim, ldq = p.query_stride(), ldk = p.key_stride();
  const T scale = static_cast<T>(p.scale), neg_inf = -std::numeric_limits<T>::infinity();
  parallel_by_cost(cost_prefix, [&](int64_t item) {
    const int64_t b = item / p.kv_heads, g = item % p.kv_heads;
    const int64_t length = p.offsets[b + 1] - p.offsets[b];
    const int64_t kv_start = p.kv_offsets[b] * ldk + g * dim;
    std::vector<T> probs(kQueryTile * kKeyTile), grad_scores(kQueryTile * kKeyTile), delta(kQueryTile),
        row_lse(kQueryTile);
    for (int64_t h = g * p.group(); h < (g + 1) * p.group(); ++h) {
      for (int64_t first = 0; first < length; first += kQueryTile) {
        const int64_t rows = std::min(kQueryTile, length - first), keys = p.visible_keys(b, first, rows);
        const int64_t q_start = (p.offsets[b] + first) * ldq + h * dim;
        const float* lse_tile = lse + (p.offsets[b] + first) * p.heads + h;
        // delta_i = dO_i . O_i = sum_j P_ij dP_ij, softmax's backward term.
        for (int64_t i = 0; i < rows; ++i) {
          T sum = 0;
          for (int64_t d = 0; d < dim; ++d) sum += grad_out[q_start + i * ldq + d] * out[q_start + i * ldq + d];
          delta[i] = sum;
        }
        // float64: forward's lse is float32 (the schema's), about 1e-7 relative, far coarser than
        // float64 gradients need; one more pass of score GEMMs recomputes it in float64.
        for (int64_t i = 0; i < rows; ++i) row_lse[i] = static_cast<T>(lse_tile[i * p.heads]);
        if constexpr (std::is_same_v<T, double>) {
          std::vector<T> peak(rows, neg_inf), total(rows, T(0));
          for (int64_t key0 = 0; key0 < keys; key0 += kKeyTile) {
            const int64_t cols = std::min(kKeyTile, keys - key0);
            T* s = probs.data();
            gemm_row_major<T>(false, true, rows, cols, dim, scale, q + q_start, ldq, k + kv_start + key0 * ldk, ldk,
                              T(0), s, cols);
            if (p.causal) mask_future(s, rows, cols, first, key0);
            for (int64_t i = 0; i < rows; ++i) online_softmax_row(s + i * cols, cols, peak[i], total[i]);
          }
          for (int64_t i = 0; i < rows; ++i) row_lse[i] = (peak[i] == neg_inf ? T(0) : peak[i]) + std::log(total[i]);
        }
        for (int64_t key0 = 0; key0 < keys; key0 += kKeyTile) {
          const int64_t cols = std::min(kKeyTile, keys - key0), key_offset = kv_start + key0 * ldk;
          T* s = probs.data();
          T* ds = grad_scores.data();
          gemm_row_major<T>(false, true, rows, cols, dim, scale, q + q_start, ldq, k + key_offset, ldk, T(0), s, cols);
          if (p.causal) mask_future(s, rows, cols, first, key0);
          for (int64_t i = 0; i < rows; ++i) {
            const T shift = row_lse[i];
            T* row = s + i * cols;
            // lse -inf: the row had no weight at all (out 0), so no score gets a gradient.
            if (shift == neg_inf) {
              std::fill(row, row + cols, T(0));
            } else {
              exp_shifted_row(row, cols, shift);
            }
          }
          // dV += P^T dO; dP = dO V^T; dS = P (dP - delta); dQ += scale dS K; dK += scale dS^T Q.
          gemm_row_major<T>(true, false, cols, dim, rows, T(1), s, cols, grad_out + q_start, ldq, T(1),
                            grad_v + key_offset, ldk);
          gemm_row_major<T>(false, true, rows, cols, dim, T(1), grad_out + q_start, ldq, v + key_offset, ldk, T(0),
                            ds, cols);
          for (int64_t i = 0; i < rows; ++i) {
            for (int64_t j = 0; j < cols; ++j) ds[i * cols + j] = score_gradient(s[i * cols + j], ds[i * cols + j],
                                                                                 delta[i]);
          }
          gemm_row_major<T>(false, false, rows, dim, cols, scale, ds, cols, k + key_offset, ldk, T(1),
                            grad_q + q_start, ldq);
          gemm_row_major<T>(true, false, cols, dim, rows, scale, ds, cols, q + q_start, ldq, T(1),
                            grad_k + key_offset, ldk);
        }
      }
    }
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
  at::Tensor grad_q = at::zeros_like(q), grad_k = at::zeros_like(k), grad_v = at::zeros_like(v);
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
