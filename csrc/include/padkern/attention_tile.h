// Per-row maths of padkern's own CUDA ragged attention (csrc/cuda/attention.cu), written once
// as __host__ __device__ functions so tests/cpp/attention_tile_test.cpp checks them on the CPU.
//
// Shape letters: L query tokens, Lk key tokens, Hq / Hkv heads, D head size. A block owns
// one tile of kQueriesPerBlock queries (forward, dQ) or keys (dK/dV) of one sequence and
// head; each row is shared by `lanes` threads, lane l holding features l, l + lanes, ...
#pragma once
#include <cstdint>

#include "padkern/ragged_layout.h"  // PADKERN_HOST_DEVICE, sequence_span, sequence_of_token

#if defined(__CUDACC__)
#define PADKERN_EXP(x) exp(x)
#define PADKERN_LOG(x) log(x)
#else
#include <cmath>
#define PADKERN_EXP(x) std::exp(x)
#define PADKERN_LOG(x) std::log(x)
#endif

namespace padkern {

// Running maximum m and sum l of exp(s - m) over the scores seen so far (FlashAttention's
// online softmax). A row that has seen no score keeps m = -inf and l = 0.
template <typename A>
struct OnlineSoftmax {
  A m, l;
};

template <typename A>
PADKERN_HOST_DEVICE OnlineSoftmax<A> online_softmax_start() {
  return {-static_cast<A>(INFINITY), A(0)};
}

// Folds score s in; returns p = exp(s - m_new) and sets *alpha = exp(m_old - m_new), the factor
// the output accumulated so far is rescaled by. While the maximum is -inf (only -inf
// scores so far) both exponents are taken against 0, so they are 0 (or 1 for alpha), not NaN.
template <typename A>
PADKERN_HOST_DEVICE A online_softmax_fold(OnlineSoftmax<A>& row, A s, A* alpha) {
  const A m_new = row.m > s ? row.m : s;
  const A m_safe = m_new == -static_cast<A>(INFINITY) ? A(0) : m_new;
  *alpha = PADKERN_EXP(row.m - m_safe);
  const A p = PADKERN_EXP(s - m_safe);
  row.l = row.l * *alpha + p;
  // NaN stays: m > s and s > m are both false for a NaN s, which m_new = s takes.
  row.m = m_new;
  return p;
}

// The row's log-sum-exp; -inf for a row without a key (l = 0).
template <typename A>
PADKERN_HOST_DEVICE A online_softmax_lse(const OnlineSoftmax<A>& row) {
  return row.l > A(0) ? row.m + PADKERN_LOG(row.l) : (row.l == A(0) ? -static_cast<A>(INFINITY) : row.l);
}

// What the accumulated output is multiplied by: 1/l, or 0 for a row without a key.
template <typename A>
PADKERN_HOST_DEVICE A online_softmax_normaliser(const OnlineSoftmax<A>& row) {
  return row.l == A(0) ? A(0) : A(1) / row.l;
}

// Backward: the probability of a score recomputed from the row's lse (0 past the mask and
// for a row without keys, whose lse is -inf), and the score's gradient p (dp - delta),
// delta = rowsum(dO * O).
template <typename A>
PADKERN_HOST_DEVICE A probability_from_lse(A s, A lse, bool visible) {
  return visible && lse != -static_cast<A>(INFINITY) ? PADKERN_EXP(s - lse) : A(0);
}

// A score with no probability (masked, or no keys) gets no gradient even when its row's
// delta is NaN: NaN in a row reaches only the keys that row sees, not its masked ones.
template <typename A>
PADKERN_HOST_DEVICE A score_gradient(A p, A dp, A delta) {
  return p == A(0) ? A(0) : p * (dp - delta);
}

// Keys a query at position `row` of its sequence sees: [0, key_limit). Causal: keys 0..row.
PADKERN_HOST_DEVICE int64_t key_limit(int64_t row, int64_t kv_length, bool causal) {
  return causal ? (row + 1 < kv_length ? row + 1 : kv_length) : kv_length;
}

// Keys any query of the tile [first_row, first_row + rows) sees: the block walks these.
PADKERN_HOST_DEVICE int64_t tile_key_limit(int64_t first_row, int64_t rows, int64_t kv_length, bool causal) {
  return key_limit(first_row + rows - 1, kv_length, causal);
}

// The first query of a sequence that can see a key tile starting at `first_key` (causal:
// query i sees key j only when j <= i).
PADKERN_HOST_DEVICE int64_t first_query_seeing(int64_t first_key, bool causal) {
  return causal ? first_key : 0;
}

// Tile `tile` of a grid laid out by the prefix `tile_starts` [B+1] of per-sequence tile
// counts: its sequence and its index within that sequence, or sequence -1 past the last tile.
struct TileCoordinates {
  int64_t sequence, index;
};

PADKERN_HOST_DEVICE TileCoordinates tile_coordinates(const int64_t* tile_starts, int64_t batch, int64_t tile) {
  if (batch == 0 || tile >= tile_starts[batch]) return {-1, 0};
  const int64_t b = sequence_of_token(tile_starts, batch, tile);
  return {b, tile - tile_starts[b]};
}

// Element offset of feature d of row `row`, head `head` in a row-major [rows, heads, D] tensor:
// 64-bit throughout (rows * heads * D passes 2^31 long before memory runs out).
PADKERN_HOST_DEVICE int64_t head_element(int64_t row, int64_t heads, int64_t head, int64_t head_dim, int64_t d) {
  return (row * heads + head) * head_dim + d;
}

}  // namespace padkern
