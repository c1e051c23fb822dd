// The tile maths of the CPU ragged attention (csrc/cpu/attention.cpp) shared by its BLAS
// kernels (attention_blas.h) and its float32 brgemm kernels (attention_brgemm.h): the
// problem, how items spread over threads, causal masking, the online softmax and the forward's
// items (sequence, head, query tile).
//
// Shapes: q [L, Hq, D], k and v [Lk, Hkv, D] row-major; query head h reads key/value head
// h / (Hq / Hkv); lse [L, Hq] float32.
#pragma once
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "padkern/softmax_rows.h"
#include "padkern/int_math.h"

namespace padkern {
namespace cpu {
namespace attention {

// 64 query rows x 256 keys: a score tile of 64 KiB (float32) stays in L2 beside the query
// and key tiles, and each GEMM is long enough for BLAS or brgemm to run near its peak.
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

// Runs work_range(first, last) over items [0, n) with cost prefix sums `prefix` [n + 1], in
// a few contiguous ranges of about equal cost per thread: sequences differ in length (and
// causal tiles in width), so equal item counts would leave one thread with most of the work.
template <typename WorkRange>
void parallel_ranges_by_cost(const std::vector<int64_t>& prefix, const WorkRange& work_range) {
  const int64_t items = static_cast<int64_t>(prefix.size()) - 1;
  if (items <= 0) return;
  const int64_t total = std::max<int64_t>(prefix.back(), 1);
  const int64_t parts = std::min<int64_t>(items, 4 * at::get_num_threads());
  auto first_of = [&](int64_t part) {
    if (part >= parts) return items;
    const int64_t target = total * part / parts;
    return static_cast<int64_t>(std::lower_bound(prefix.begin(), prefix.end() - 1, target) - prefix.begin());
  };
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) { work_range(first_of(begin), first_of(end)); });
}

// work(item) for each item, as parallel_ranges_by_cost spreads them.
template <typename Work>
void parallel_by_cost(const std::vector<int64_t>& prefix, const Work& work) {
  parallel_ranges_by_cost(prefix, [&](int64_t first, int64_t last) {
    for (int64_t item = first; item < last; ++item) work(item);
  });
}

// Masks the keys after each query (causal) in a [rows, cols] score tile whose rows are
// queries first.. and columns keys key0..: key j is seen by query i when j <= i.
// Rows lie `ld` apart (cols by default).
template <typename T>
void mask_future(T* scores, int64_t rows, int64_t cols, int64_t first, int64_t key0, int64_t ld = 0) {
  ld = ld > 0 ? ld : cols;
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t seen = std::clamp<int64_t>(first + i - key0 + 1, 0, cols);
    std::fill(scores + i * ld + seen, scores + i * ld + cols, -std::numeric_limits<T>::infinity());
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

// Forward items: (sequence, head, query tile), tiles fastest, so that consecutive items share
// a sequence's keys and values.
struct ForwardItems {
  std::vector<int64_t> tile_prefix;  // [B + 1] query tiles before each sequence
  std::vector<int64_t> cost_prefix;  // [items + 1] for parallel_ranges_by_cost
};

inline ForwardItems forward_items(const Problem& p) {
  ForwardItems items{std::vector<int64_t>(p.batch + 1, 0), {0}};
  for (int64_t b = 0; b < p.batch; ++b) {
    const int64_t rows = p.offsets[b + 1] - p.offsets[b], tiles = ceil_div(rows, kQueryTile);
    items.tile_prefix[b + 1] = items.tile_prefix[b] + tiles;
    for (int64_t h = 0; h < p.heads; ++h) {
      for (int64_t t = 0; t < tiles; ++t) {
        const int64_t tile_rows = std::min(kQueryTile, rows - t * kQueryTile);
        items.cost_prefix.push_back(items.cost_prefix.back() +
                                    tile_rows * (p.visible_keys(b, t * kQueryTile, tile_rows) + 8));
      }
    }
  }
  return items;
}

struct ForwardItem {
  int64_t b, h, g;  // sequence, query head, its key/value head
  int64_t first;    // the tile's first query row, counted from the sequence's first
  int64_t rows;     // query rows in the tile (<= kQueryTile)
  int64_t keys;     // keys its rows see
};

inline ForwardItem forward_item(const Problem& p, const ForwardItems& items, int64_t item) {
  // Sequence b's items start at tile_prefix[b] * heads.
  const auto& tiles = items.tile_prefix;
  const int64_t b = std::upper_bound(tiles.begin(), tiles.end(), item,
                                     [&](int64_t value, int64_t prefix) { return value < prefix * p.heads; }) -
                    tiles.begin() - 1;
  const int64_t local = item - tiles[b] * p.heads, count = tiles[b + 1] - tiles[b];
  const int64_t h = local / count, first = (local % count) * kQueryTile;
  const int64_t rows = std::min(kQueryTile, p.offsets[b + 1] - p.offsets[b] - first);
  return {b, h, h / p.group(), first, rows, p.visible_keys(b, first, rows)};
}

// A tile's rows out of the online softmax: out = acc / total, lse = peak + log(total).
template <typename T>
void write_tile(const Problem& p, const ForwardItem& it, const T* acc, const T* peak, const T* total, T* out,
                float* lse) {
  const T neg_inf = -std::numeric_limits<T>::infinity();
  for (int64_t i = 0; i < it.rows; ++i) {
    const int64_t token = p.offsets[it.b] + it.first + i;
    // total is 0 only where every weight is 0 (no key, or every score -inf): out 0 there.
    const T divisor = total[i] == T(0) ? T(1) : total[i];
    T* out_row = out + token * p.query_stride() + it.h * p.dim;
    for (int64_t d = 0; d < p.dim; ++d) out_row[d] = acc[i * p.dim + d] / divisor;
    const T shift = peak[i] == neg_inf ? T(0) : peak[i];
    lse[token * p.heads + it.h] = static_cast<float>(shift + std::log(total[i]));
  }
}

// One key tile's scores (rows `ld` apart) into the rows' online softmax, rescaling their
// accumulators [rows, D] where the peak moved.
template <typename T>
void softmax_tile(T* s, int64_t ld, int64_t rows, int64_t cols, int64_t dim, T* acc, T* peak, T* total) {
  for (int64_t i = 0; i < rows; ++i) {
    const T rescale = online_softmax_row(s + i * ld, cols, peak[i], total[i]);
    if (rescale != T(1)) {
      T* acc_row = acc + i * dim;
      for (int64_t d = 0; d < dim; ++d) acc_row[d] *= rescale;
    }
  }
}

// Backward items: (sequence, key/value head). An item owns its keys' and its query heads'
// gradient rows, so nothing is shared between threads and the sums run in one fixed order.
inline std::vector<int64_t> backward_costs(const Problem& p) {
  std::vector<int64_t> cost_prefix{0};
  for (int64_t b = 0; b < p.batch; ++b) {
    const int64_t rows = p.offsets[b + 1] - p.offsets[b];
    for (int64_t g = 0; g < p.kv_heads; ++g) {
      cost_prefix.push_back(cost_prefix.back() + p.group() * rows * (p.visible_keys(b, 0, rows) + 8));
    }
  }
  return cost_prefix;
}

}  // namespace attention
}  // namespace cpu
}  // namespace padkern
