// The CPU ragged attention's float32 tiles on oneDNN's brgemm micro-kernel (brgemm_blocks.h).
// On these tiles it ran at 2.2-2.5x the GEMM rate of the BLAS behind tile_gemm.h on a Zen 5
// core (MKL, whose AVX-512 paths are not taken on AMD): 226-265 against 103-107 GFLOP/s.
//
// The micro-kernel reads both operands row-major, so what a product needs transposed is laid
// out once: per (sequence, key/value head) the keys, scaled, and the values, in [D, 256]
// blocks per key tile; per query tile Q and dO; and the backward gathers dK and dV
// transposed. Its kernels are generated and cached per shape, so the shapes are kept few
// whatever the lengths: query rows rounded up to 16, 32 or 64 (a partial tile's rows copied,
// zeros after them), score widths rounded up to 16 keys (scores past a tile's keys are
// computed, then ignored or zeroed), and products over keys in whole groups of 16, the last
// group's rows from a zero-padded copy (add_key_products) so that it reads nothing past the
// sequence's keys. A sequence of fewer than 16 queries (decoding) stays on the BLAS
// tiles (attention_blas.h): laying out its keys would cost more than its products.
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "attention_blas.h"
#include "attention_tiles.h"
#include "brgemm_blocks.h"
#include "padkern/attention_tile.h"
#include "padkern/int_math.h"
#include "padkern/softmax_rows.h"
#include "padkern/transpose_rows.h"

namespace padkern {
namespace cpu {
namespace attention {

constexpr int64_t kKeyGroup = 16;
constexpr int64_t kBrgemmMinQueries = 16;

// The rows a tile of `rows` queries is computed on: 16, 32 or 64.
inline int64_t padded_query_rows(int64_t rows) { return rows <= 16 ? 16 : rows <= 32 ? 32 : kQueryTile; }

// One head's rows [length, D] (`ld` apart) as scale * rows^T in [tiles][D][kKeyTile] blocks,
// zero past `length`.
inline void transposed_key_tiles(const float* rows, int64_t ld, int64_t length, int64_t dim, float scale,
                                 std::vector<float>& blocks) {
  blocks.resize(round_up(length, kKeyTile) * dim);
  for (int64_t key0 = 0; key0 < length; key0 += kKeyTile) {
    const int64_t keys = std::min(kKeyTile, length - key0);
    float* block = blocks.data() + key0 / kKeyTile * dim * kKeyTile;
    transpose_rows(rows + key0 * ld, ld, keys, dim, block, kKeyTile, scale);
    for (int64_t d = 0; d < dim; ++d) std::fill(block + d * kKeyTile + keys, block + (d + 1) * kKeyTile, 0.0f);
  }
}

// A tile's `rows` rows (`ld` apart) for an m-row product: in place where rows == m, else
// copied into `buffer` [m, D] with zero rows after them. Returns the rows and their stride.
inline std::pair<const float*, int64_t> tile_rows(const float* first, int64_t ld, int64_t rows, int64_t m,
                                                  int64_t dim, std::vector<float>& buffer) {
  if (rows == m) return {first, ld};
  buffer.assign(m * dim, 0.0f);
  for (int64_t i = 0; i < rows; ++i) std::copy_n(first + i * ld, dim, buffer.data() + i * dim);
  return {buffer.data(), dim};
}

// acc [m, D] += weights [m, 0..cols) (ld kKeyTile) @ the tile's rows [cols, D] (`ld` apart):
// whole 16-key groups in place, the last few keys' rows copied by tile_rows into `buffer`
// [16, D] with zero rows after them, so that the last group's product reads nothing past the
// tile's keys (the next sequence's rows, or past the tensor's end). In every row whose result is
// read, the weights in the columns [cols, round_up(cols, 16)) must be zero: they meet the copy's
// zero rows, and a NaN there (a score of -inf * 0) would reach the row.
inline void add_key_products(int64_t m, int64_t cols, int64_t dim, const float* weights, const float* tile,
                             int64_t ld, float* acc, std::vector<float>& buffer) {
  const int64_t whole = cols / kKeyGroup * kKeyGroup;
  if (whole > 0) brgemm_block(m, dim, whole, weights, kKeyTile, tile, ld, acc, dim, /*accumulate=*/true);
  if (whole == cols) return;
  const auto [rest, ld_rest] = tile_rows(tile + whole * ld, ld, cols - whole, kKeyGroup, dim, buffer);
  brgemm_block(m, dim, kKeyGroup, weights + whole, kKeyTile, rest, ld_rest, acc, dim, /*accumulate=*/true);
}

// The forward of one range of items: keys laid out once per (sequence, key/value head).
inline void forward_range_brgemm(const Problem& p, const ForwardItems& items, int64_t first_item, int64_t last_item,
                                 const float* q, const float* k, const float* v, float* out, float* lse) {
  const int64_t dim = p.dim, ldq = p.query_stride(), ldk = p.key_stride();
  const float scale = static_cast<float>(p.scale), neg_inf = -std::numeric_limits<float>::infinity();
  std::vector<float> keys_t, q_buffer, tail, scores(kQueryTile * kKeyTile), acc(kQueryTile * dim);
  std::vector<float> peak(kQueryTile), total(kQueryTile);
  int64_t cached_b = -1, cached_g = -1;
  for (int64_t item = first_item; item < last_item; ++item) {
    const ForwardItem it = forward_item(p, items, item);
    if (p.offsets[it.b + 1] - p.offsets[it.b] < kBrgemmMinQueries) {
      forward_tile_blas<float>(p, it, q, k, v, out, lse);
      continue;
    }
    const float* k_seq = k + p.kv_offsets[it.b] * ldk + it.g * dim;
    const float* v_seq = v + p.kv_offsets[it.b] * ldk + it.g * dim;
    if (it.b != cached_b || it.g != cached_g) {
      transposed_key_tiles(k_seq, ldk, p.kv_offsets[it.b + 1] - p.kv_offsets[it.b], dim, scale, keys_t);
      cached_b = it.b, cached_g = it.g;
    }
    const int64_t m = padded_query_rows(it.rows);
    const auto [q_tile, ld_q] =
        tile_rows(q + (p.offsets[it.b] + it.first) * ldq + it.h * dim, ldq, it.rows, m, dim, q_buffer);
    std::fill(acc.begin(), acc.end(), 0.0f);
    std::fill(peak.begin(), peak.end(), neg_inf);
    std::fill(total.begin(), total.end(), 0.0f);
    float* s = scores.data();
    for (int64_t key0 = 0; key0 < it.keys; key0 += kKeyTile) {
      const int64_t cols = std::min(kKeyTile, it.keys - key0), width = round_up(cols, kKeyGroup);
      brgemm_block(m, width, dim, q_tile, ld_q, keys_t.data() + key0 / kKeyTile * dim * kKeyTile, kKeyTile, s,
                   kKeyTile, /*accumulate=*/false);
      if (p.causal) mask_future(s, it.rows, cols, it.first, key0, kKeyTile);
      softmax_tile(s, kKeyTile, it.rows, cols, dim, acc.data(), peak.data(), total.data());
      // Zero weights past the tile's keys: there the scores are of keys the rows do not see
      // (causal) or of the zero keys after the sequence's, NaN for a query holding an infinity.
      // Rows past it.rows are left as they are (scores of zero queries, not weights): their
      // accumulators are never read.
      for (int64_t i = 0; i < it.rows; ++i) std::fill(s + i * kKeyTile + cols, s + i * kKeyTile + width, 0.0f);
      add_key_products(m, cols, dim, s, v_seq + key0 * ldk, ldk, acc.data(), tail);
    }
    write_tile(p, it, acc.data(), peak.data(), total.data(), out, lse);
  }
}

// A tile's rows [rows, D] (`ld` apart) transposed into `buffer` [D, kQueryTile], zero in the
// columns after `rows`.
inline void transposed_rows(const float* first, int64_t ld, int64_t rows, int64_t dim, std::vector<float>& buffer) {
  buffer.resize(dim * kQueryTile);
  transpose_rows(first, ld, rows, dim, buffer.data(), kQueryTile);
  for (int64_t d = 0; d < dim; ++d) {
    std::fill(buffer.data() + d * kQueryTile + rows, buffer.data() + (d + 1) * kQueryTile, 0.0f);
  }
}

// block[D, 0..cols) (ld kKeyTile) += left [D, m] (ld kQueryTile) @ right [m, 0..cols) (ld
// kKeyTile): whole 16-key groups straight into the block, the last few keys through a
// 16-column `partial` [D, 16], so that nothing, not even 0 * inf from a non-finite left
// operand, reaches the block's columns past `cols` (real keys in a causal tile).
inline void add_transposed_products(const float* left, const float* right, int64_t m, int64_t whole, int64_t cols,
                                    int64_t dim, float* block, float* partial) {
  if (whole > 0) brgemm_block(dim, whole, m, left, kQueryTile, right, kKeyTile, block, kKeyTile, true);
  if (whole == cols) return;
  brgemm_block(dim, kKeyGroup, m, left, kQueryTile, right + whole, kKeyTile, partial, kKeyGroup, false);
  for (int64_t d = 0; d < dim; ++d) {
    for (int64_t j = 0; j < cols - whole; ++j) block[d * kKeyTile + whole + j] += partial[d * kKeyGroup + j];
  }
}

// The backward of one item (sequence b, key/value head g), as backward_item_blas. dK and dV
// are gathered transposed, dK^T += Q^T dS and dV^T += dO^T P in [D, 256] blocks per key tile,
// so that P and dS are read as computed, row-major, and only Q and dO (once per query tile)
// and the finished dK and dV (once per item) are transposed; dQ += dS K over a query tile's
// key tiles. Each is written to its gradient once complete, as the item's rows are its own.
inline void backward_item_brgemm(const Problem& p, int64_t b, int64_t g, const float* grad_out, const float* q,
                                 const float* k, const float* v, const float* out, const float* lse, float* grad_q,
                                 float* grad_k, float* grad_v) {
  const int64_t length = p.offsets[b + 1] - p.offsets[b];
  if (length < kBrgemmMinQueries) {
    backward_item_blas<float>(p, b, g, grad_out, q, k, v, out, lse, grad_q, grad_k, grad_v);
    return;
  }
  const int64_t dim = p.dim, ldq = p.query_stride(), ldk = p.key_stride();
  const float scale = static_cast<float>(p.scale), neg_inf = -std::numeric_limits<float>::infinity();
  const int64_t kv_length = p.kv_offsets[b + 1] - p.kv_offsets[b];
  const float* k_seq = k + p.kv_offsets[b] * ldk + g * dim;
  const float* v_seq = v + p.kv_offsets[b] * ldk + g * dim;
  std::vector<float> keys_t, values_t;
  transposed_key_tiles(k_seq, ldk, kv_length, dim, scale, keys_t);
  transposed_key_tiles(v_seq, ldk, kv_length, dim, 1.0f, values_t);
  std::vector<float> dk_t(keys_t.size(), 0.0f), dv_t(keys_t.size(), 0.0f), dq(kQueryTile * dim);
  std::vector<float> q_buffer, do_buffer, q_t, do_t, tail, delta(kQueryTile), row_lse(kQueryTile);
  std::vector<float> probs(kQueryTile * kKeyTile), grad_scores(kQueryTile * kKeyTile), partial(dim * kKeyGroup);
  for (int64_t h = g * p.group(); h < (g + 1) * p.group(); ++h) {
    for (int64_t first = 0; first < length; first += kQueryTile) {
      const int64_t rows = std::min(kQueryTile, length - first), keys = p.visible_keys(b, first, rows);
      const int64_t m = padded_query_rows(rows), q_start = (p.offsets[b] + first) * ldq + h * dim;
      const auto [q_tile, ld_q] = tile_rows(q + q_start, ldq, rows, m, dim, q_buffer);
      const auto [do_tile, ld_do] = tile_rows(grad_out + q_start, ldq, rows, m, dim, do_buffer);
      transposed_rows(q + q_start, ldq, rows, dim, q_t);
      transposed_rows(grad_out + q_start, ldq, rows, dim, do_t);
      for (int64_t i = 0; i < rows; ++i) {
        // delta_i = dO_i . O_i = sum_j P_ij dP_ij, softmax's backward term.
        delta[i] = row_dot(grad_out + q_start + i * ldq, out + q_start + i * ldq, dim);
        row_lse[i] = lse[(p.offsets[b] + first + i) * p.heads + h];
      }
      std::fill(dq.begin(), dq.end(), 0.0f);
      for (int64_t key0 = 0; key0 < keys; key0 += kKeyTile) {
        const int64_t cols = std::min(kKeyTile, keys - key0);
        const int64_t width = round_up(cols, kKeyGroup), whole = cols / kKeyGroup * kKeyGroup;
        const int64_t block = key0 / kKeyTile * dim * kKeyTile;
        float* s = probs.data();
        float* ds = grad_scores.data();
        // S = scale Q K^T; dP = dO V^T (into ds, which becomes dS in place).
        brgemm_block(m, width, dim, q_tile, ld_q, keys_t.data() + block, kKeyTile, s, kKeyTile, false);
        brgemm_block(m, width, dim, do_tile, ld_do, values_t.data() + block, kKeyTile, ds, kKeyTile, false);
        if (p.causal) mask_future(s, rows, cols, first, key0, kKeyTile);
        for (int64_t i = 0; i < m; ++i) {
          float* p_row = s + i * kKeyTile;
          float* ds_row = ds + i * kKeyTile;
          // Zero past the real rows and keys: the products below sum over the tile's m rows
          // and write all `width` key columns. lse -inf: the row had no weight at all (out 0),
          // so no score gets a gradient.
          if (i >= rows || row_lse[i] == neg_inf) {
            std::fill_n(p_row, width, 0.0f);
            std::fill_n(ds_row, width, 0.0f);
            continue;
          }
          exp_shifted_row(p_row, cols, row_lse[i]);
          score_gradient_row(p_row, ds_row, cols, delta[i], scale);  // scale dS, for dQ and dK
          std::fill(p_row + cols, p_row + width, 0.0f);
          std::fill(ds_row + cols, ds_row + width, 0.0f);
        }
        // dV^T += dO^T P; dK^T += Q^T (scale dS): [D, cols] of this key tile's block.
        add_transposed_products(do_t.data(), s, m, whole, cols, dim, dv_t.data() + block, partial.data());
        add_transposed_products(q_t.data(), ds, m, whole, cols, dim, dk_t.data() + block, partial.data());
        // dQ += (scale dS) K.
        add_key_products(m, cols, dim, ds, k_seq + key0 * ldk, ldk, dq.data(), tail);
      }
      for (int64_t i = 0; i < rows; ++i) std::copy_n(dq.data() + i * dim, dim, grad_q + q_start + i * ldq);
    }
  }
  // Back from the transposed blocks onto the gradients' rows.
  const int64_t kv_start = p.kv_offsets[b] * ldk + g * dim;
  for (int64_t key0 = 0; key0 < kv_length; key0 += kKeyTile) {
    const int64_t keys = std::min(kKeyTile, kv_length - key0), block = key0 / kKeyTile * dim * kKeyTile;
    transpose_rows(dk_t.data() + block, kKeyTile, dim, keys, grad_k + kv_start + key0 * ldk, ldk);
    transpose_rows(dv_t.data() + block, kKeyTile, dim, keys, grad_v + kv_start + key0 * ldk, ldk);
  }
}

}  // namespace attention
}  // namespace cpu
}  // namespace padkern
