// The CPU ragged attention's tiles through BLAS (tile_gemm.h): float64, and float32 where the
// brgemm kernels (attention_brgemm.h) do not pay.
#pragma once
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "attention_tiles.h"
#include "padkern/attention_tile.h"
#include "tile_gemm.h"

namespace padkern {
namespace cpu {
namespace attention {

// The forward of one item (sequence, head, query tile) over its key tiles.
template <typename T>
void forward_tile_blas(const Problem& p, const ForwardItem& it, const T* q, const T* k, const T* v, T* out,
                       float* lse) {
  const int64_t dim = p.dim, ldq = p.query_stride(), ldk = p.key_stride();
  const T scale = static_cast<T>(p.scale), neg_inf = -std::numeric_limits<T>::infinity();
  const T* q_tile = q + (p.offsets[it.b] + it.first) * ldq + it.h * dim;
  const T* k_seq = k + p.kv_offsets[it.b] * ldk + it.g * dim;
  const T* v_seq = v + p.kv_offsets[it.b] * ldk + it.g * dim;
  std::vector<T> scores(kQueryTile * kKeyTile), acc(it.rows * dim, T(0)), peak(it.rows, neg_inf), total(it.rows, T(0));
  for (int64_t key0 = 0; key0 < it.keys; key0 += kKeyTile) {
    const int64_t cols = std::min(kKeyTile, it.keys - key0);
    T* s = scores.data();
    gemm_row_major<T>(false, true, it.rows, cols, dim, scale, q_tile, ldq, k_seq + key0 * ldk, ldk, T(0), s, cols);
    if (p.causal) mask_future(s, it.rows, cols, it.first, key0);
    softmax_tile(s, cols, it.rows, cols, dim, acc.data(), peak.data(), total.data());
    gemm_row_major<T>(false, false, it.rows, dim, cols, T(1), s, cols, v_seq + key0 * ldk, ldk, T(1), acc.data(), dim);
  }
  write_tile(p, it, acc.data(), peak.data(), total.data(), out, lse);
}

// The backward of one item (sequence b, key/value head g): its query heads' tiles over their
// key tiles, accumulating into its rows of grad_q, grad_k and grad_v, which it zeroes first.
template <typename T>
void backward_item_blas(const Problem& p, int64_t b, int64_t g, const T* grad_out, const T* q, const T* k,
                        const T* v, const T* out, const float* lse, T* grad_q, T* grad_k, T* grad_v) {
  const int64_t dim = p.dim, ldq = p.query_stride(), ldk = p.key_stride();
  const T scale = static_cast<T>(p.scale), neg_inf = -std::numeric_limits<T>::infinity();
  const int64_t length = p.offsets[b + 1] - p.offsets[b];
  const int64_t kv_start = p.kv_offsets[b] * ldk + g * dim;
  for (int64_t i = 0; i < length; ++i) {
    std::fill_n(grad_q + (p.offsets[b] + i) * ldq + g * p.group() * dim, p.group() * dim, T(0));
  }
  for (int64_t j = 0; j < p.kv_offsets[b + 1] - p.kv_offsets[b]; ++j) {
    std::fill_n(grad_k + kv_start + j * ldk, dim, T(0));
    std::fill_n(grad_v + kv_start + j * ldk, dim, T(0));
  }
  std::vector<T> probs(kQueryTile * kKeyTile), grad_scores(kQueryTile * kKeyTile), delta(kQueryTile),
      row_lse(kQueryTile);
  for (int64_t h = g * p.group(); h < (g + 1) * p.group(); ++h) {
    for (int64_t first = 0; first < length; first += kQueryTile) {
      const int64_t rows = std::min(kQueryTile, length - first), keys = p.visible_keys(b, first, rows);
      const int64_t q_start = (p.offsets[b] + first) * ldq + h * dim;
      const float* lse_tile = lse + (p.offsets[b] + first) * p.heads + h;
      // delta_i = dO_i . O_i = sum_j P_ij dP_ij, softmax's backward term.
      for (int64_t i = 0; i < rows; ++i) delta[i] = row_dot(grad_out + q_start + i * ldq, out + q_start + i * ldq, dim);
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
}

}  // namespace attention
}  // namespace cpu
}  // namespace padkern
