// Direct CPU kernels of the grouped ragged convolution (few channels per group, see
// grouped_direct in conv1d.cpp): register tiles, no intermediate in memory. The GEMM route
// of conv1d_plan.h writes k per-tap products [L, k C_out] and reads them back, so with 16
// channels per group it is memory-bound at a fifth of the GEMM rate; here each output tile
// stays in registers from its first multiply-add to its store.
//
// Shapes: G groups, C input and N output channels per group, k taps, W lanes per register.
//   grouped_tokens:      out [L, G N] = bias + sum_j sum_c x[source_j(t), g C + c] * taps_weight[g, j, c, :]
//                        taps_weight [G, k, C, N_pad] and bias_lanes [G, N_pad] hold zeros past N.
//   grouped_weight_grad_tokens: partial [k, C_pad, N_pad] += sum_t x[source_j(t), g C + c] * grad[t, g N + n]
//                        for one group g and a range of tokens.
// Both take a window path (conv1d_window.h) for tokens away from their sequence's edges when
// the taps are one row apart (k = 2..5): each input element broadcast once into every sum it
// feeds (the weight gradient's for float32/float64 with N a whole number of registers).
// A register holds W = Bytes / sizeof(accumulator) lanes (gcc/clang vector extensions: one
// zmm or ymm, or a pair of narrower registers in the baseline clone).
#pragma once
#include <ATen/OpMathType.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "conv1d_window.h"
#include "padkern/conv1d_layout.h"
#include "padkern/vector_clones.h"

namespace padkern {
namespace cpu {

struct GroupedShape {
  int64_t groups, in_per_group, out_per_group, out_lanes;  // out_lanes: N rounded up to W
  int64_t in_width() const { return groups * in_per_group; }
  int64_t out_width() const { return groups * out_per_group; }
};

// Tokens per forward register tile (8 accumulators; interior tiles with 64-byte registers
// take kWideTokenTile), and input channels per weight-gradient register tile (8 accumulators).
constexpr int64_t kTokenTile = 8;
constexpr int64_t kChannelTile = 8;
// Tokens whose gradient rows are staged at once in the weight gradient (L1-resident).
constexpr int64_t kStageTokens = 64;

// Register width of the clone the loader picks: 64 bytes with AVX-512, else 32.
inline int register_bytes() {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
  static const int bytes = __builtin_cpu_supports("x86-64-v4") ? 64 : 32;
  return bytes;
#elif defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  static const int bytes = __builtin_cpu_supports("avx512f") ? 64 : 32;
  return bytes;
#else
  return 32;
#endif
}

// sources[j * stride]: the row token t reads through tap j, or zero_row where that falls
// outside its sequence (span: t's).
template <typename scalar_t>
void token_sources(int64_t t, const SequenceSpan& span, ConvTaps taps, int64_t width, const scalar_t* x,
                   const scalar_t* zero_row, int64_t stride, const scalar_t** sources) {
  for (int64_t j = 0; j < taps.count; ++j) {
    const int64_t source = tap_source(t, tap_shift(taps, j), span);
    sources[j * stride] = source < 0 ? zero_row : x + source * width;
  }
}

// sources[j * tile + i]: the row token t0 + i reads through tap j, or zero_row where that
// falls outside its sequence or i >= count. `b`/`span` carry the sequence walk across calls.
template <typename scalar_t>
void tile_sources(const int64_t* offsets, int64_t batch, int64_t rows, int64_t t0, int64_t count, int64_t tile,
                  ConvTaps taps, int64_t width, const scalar_t* x, const scalar_t* zero_row, int64_t& b,
                  SequenceSpan& span, const scalar_t** sources) {
  for (int64_t i = 0; i < tile; ++i) {
    if (i >= count) {
      for (int64_t j = 0; j < taps.count; ++j) sources[j * tile + i] = zero_row;
      continue;
    }
    const int64_t t = t0 + i;
    while (t >= span.eos && b + 1 < batch) span = sequence_span(offsets, ++b, rows);
    token_sources(t, span, taps, width, x, zero_row, tile, sources + i);
  }
}

// Interior tiles with 64-byte registers take twice the tokens: with 8, each sum's K
// multiply-adds per channel form a dependent chain and 8 chains only just cover the
// multiply-add's latency at two a cycle; 16 sums + 5 weights + 1 broadcast fit AVX-512's 32
// registers (AVX2's 16 hold the 8-token tile).
constexpr int64_t kWideTokenTile = 16;

template <typename scalar_t, int Bytes>
PADKERN_VECTOR_CLONES void grouped_tokens(const scalar_t* x, const int64_t* offsets, int64_t batch, int64_t rows,
                                          GroupedShape s, const at::opmath_type<scalar_t>* taps_weight,
                                          const at::opmath_type<scalar_t>* bias_lanes, ConvTaps taps,
                                          const scalar_t* zero_row, int64_t begin, int64_t end, scalar_t* out) {
  using A = at::opmath_type<scalar_t>;
  using Vec = Lanes<A, Bytes>;
  constexpr int64_t W = Bytes / sizeof(A);
  constexpr int64_t kMostTokens = Bytes == 64 ? kWideTokenTile : kTokenTile;
  const int64_t C = s.in_per_group, N = s.out_per_group;
  std::vector<const scalar_t*> sources(taps.count * kTokenTile);
  const bool unrolled = window_unrolled(taps);
  const TapWindow window = tap_window(taps);
  int64_t b = sequence_of_token(offsets, batch, begin);
  SequenceSpan span = sequence_span(offsets, b, rows);
  for (int64_t t0 = begin; t0 < end;) {
    while (t0 >= span.eos && b + 1 < batch) span = sequence_span(offsets, ++b, rows);
    // Whether the next `tokens` tokens, and every row their taps read, lie inside one sequence.
    const auto interior_for = [&](int64_t tokens) {
      return unrolled && end - t0 >= tokens && window.holds(t0, t0 + tokens - 1, span);
    };
    const int64_t tile = kMostTokens > kTokenTile && interior_for(kMostTokens) ? kMostTokens : kTokenTile;
    const bool interior = tile > kTokenTile || interior_for(kTokenTile);
    const int64_t count = std::min(tile, end - t0);
    if (!interior) {
      tile_sources(offsets, batch, rows, t0, count, kTokenTile, taps, s.in_width(), x, zero_row, b, span,
                   sources.data());
    }
    for (int64_t g = 0; g < s.groups; ++g) {
      const A* place_weights[kMostUnrolledTaps];
      for (int64_t p = 0; interior && p < taps.count; ++p) {
        place_weights[p] = taps_weight + (g * taps.count + window.tap_of_place(p)) * C * s.out_lanes;
      }
      for (int64_t n0 = 0; n0 < N; n0 += W) {
        Vec acc[kMostTokens];
        Vec init;
        std::memcpy(&init, bias_lanes + g * s.out_lanes + n0, sizeof init);
        for (int64_t i = 0; i < tile; ++i) acc[i] = init;
        if (interior) {
          const scalar_t* first_row = x + (t0 + window.lowest) * s.in_width() + g * C;
          const A* lane_weights[kMostUnrolledTaps];
          for (int64_t p = 0; p < taps.count; ++p) lane_weights[p] = place_weights[p] + n0;
          if (tile == kMostTokens) {
            window_tile_sums<scalar_t, Bytes, kMostTokens>(taps.count, first_row, s.in_width(), C, s.out_lanes,
                                                           lane_weights, acc);
          } else {
            window_tile_sums<scalar_t, Bytes, kTokenTile>(taps.count, first_row, s.in_width(), C, s.out_lanes,
                                                          lane_weights, acc);
          }
        } else {
          for (int64_t j = 0; j < taps.count; ++j) {
            const scalar_t* const* tap_rows = sources.data() + j * kTokenTile;
            const A* w = taps_weight + (g * taps.count + j) * C * s.out_lanes + n0;
            for (int64_t c = 0; c < C; ++c, w += s.out_lanes) {
              Vec lanes;
              std::memcpy(&lanes, w, sizeof lanes);
              const int64_t column = g * C + c;
              for (int64_t i = 0; i < kTokenTile; ++i) acc[i] += static_cast<A>(tap_rows[i][column]) * lanes;
            }
          }
        }
        const int64_t valid = std::min(W, N - n0);
        for (int64_t i = 0; i < count; ++i) {
          scalar_t* o = out + (t0 + i) * s.out_width() + g * N + n0;
          if constexpr (std::is_same_v<scalar_t, A>) {
            // A whole register is one store: the element loop became a `rep movs` per token
            // row, whose start-up cost rivalled the tile's multiply-adds.
            if (valid == W) {
              std::memcpy(o, &acc[i], sizeof(Vec));
              continue;
            }
          }
          for (int64_t l = 0; l < valid; ++l) o[l] = static_cast<scalar_t>(acc[i][l]);
        }
      }
    }
    t0 += tile;
  }
}

template <typename scalar_t, int Bytes>
PADKERN_VECTOR_CLONES void grouped_weight_grad_tokens(const scalar_t* grad, const scalar_t* x, const int64_t* offsets,
                                               int64_t batch, int64_t rows, GroupedShape s, int64_t in_lanes,
                                               ConvTaps taps, const scalar_t* zero_row, int64_t g, int64_t begin,
                                               int64_t end, at::opmath_type<scalar_t>* partial) {
  using A = at::opmath_type<scalar_t>;
  using Vec = Lanes<A, Bytes>;
  constexpr int64_t W = Bytes / sizeof(A);
  // Channels per window run pass: 4 x 5 sums + 5 gradients + 1 fit AVX-512's 32 registers,
  // 2 x 5 + 5 + 1 AVX2's 16.
  constexpr int kWindowChannels = Bytes == 64 ? 4 : 2;
  const int64_t C = s.in_per_group, N = s.out_per_group, NP = s.out_lanes;
  std::fill(partial, partial + taps.count * in_lanes * NP, A(0));
  // Interior runs take the window path where gradient rows load in place as whole registers.
  const bool window_path = window_unrolled(taps) && std::is_same_v<scalar_t, A> && N % W == 0;
  const TapWindow window = tap_window(taps);  // forward taps here (conv1d_plan.h); mirrored ones map too
  struct Run {
    int64_t sequence, first, last;
  };
  std::vector<Run> runs;
  std::vector<A> staged(kStageTokens * NP, A(0));
  std::vector<const scalar_t*> sources(taps.count * kStageTokens);
  int64_t b = sequence_of_token(offsets, batch, begin);
  SequenceSpan span = sequence_span(offsets, b, rows);
  for (int64_t t0 = begin; t0 < end; t0 += kStageTokens) {
    const int64_t count = std::min(kStageTokens, end - t0);
    // The stage's tokens: runs of interior ones (every row their taps read inside their
    // sequence), and the rest, staged for the general loop: group g's gradient lanes, zero
    // past N so a register load never reads past a row, and the row each tap reads.
    int64_t edges = 0;
    for (int64_t i = 0; i < count; ++i) {
      const int64_t t = t0 + i;
      while (t >= span.eos && b + 1 < batch) span = sequence_span(offsets, ++b, rows);
      if (window_path && window.holds(t, t, span)) {
        if (!runs.empty() && runs.back().sequence == b && runs.back().last == t) {
          runs.back().last = t + 1;
        } else {
          runs.push_back({b, t, t + 1});
        }
        continue;
      }
      const scalar_t* row = grad + t * s.out_width() + g * N;
      for (int64_t n = 0; n < N; ++n) staged[edges * NP + n] = static_cast<A>(row[n]);
      token_sources(t, span, taps, s.in_width(), x, zero_row, kStageTokens, sources.data() + edges);
      ++edges;
    }
    if (edges > 0) {  // the general loop over the stage's edge tokens
      for (int64_t j = 0; j < taps.count; ++j) {
        const scalar_t* const* tap_rows = sources.data() + j * kStageTokens;
        for (int64_t c0 = 0; c0 < C; c0 += kChannelTile) {
          // Channels past C repeat the last one (a valid read); their sums land in the rows
          // of partial past C, which the caller drops.
          int64_t columns[kChannelTile];
          for (int64_t r = 0; r < kChannelTile; ++r) columns[r] = g * C + std::min(c0 + r, C - 1);
          for (int64_t n0 = 0; n0 < N; n0 += W) {
            A* block = partial + (j * in_lanes + c0) * NP + n0;
            Vec acc[kChannelTile];
            for (int64_t r = 0; r < kChannelTile; ++r) std::memcpy(&acc[r], block + r * NP, sizeof(Vec));
            for (int64_t i = 0; i < edges; ++i) {
              Vec lanes;
              std::memcpy(&lanes, staged.data() + i * NP + n0, sizeof lanes);
              const scalar_t* row = tap_rows[i];
              for (int64_t r = 0; r < kChannelTile; ++r) acc[r] += static_cast<A>(row[columns[r]]) * lanes;
            }
            for (int64_t r = 0; r < kChannelTile; ++r) std::memcpy(block + r * NP, &acc[r], sizeof(Vec));
          }
        }
      }
    }
  }
  // The runs, each whole across stages (K - 1 rows of walk-in and walk-out apiece).
  if constexpr (std::is_same_v<scalar_t, A>) {
    for (const Run& run : runs) {
      for (int64_t c0 = 0; c0 < C; c0 += kWindowChannels) {
        int64_t columns[kWindowChannels];  // past C: the last channel again, as above
        for (int64_t r = 0; r < kWindowChannels; ++r) columns[r] = g * C + std::min(c0 + r, C - 1);
        for (int64_t n0 = 0; n0 < N; n0 += W) {
          A* place_sums[kMostUnrolledTaps];
          for (int64_t p = 0; p < taps.count; ++p) {
            place_sums[p] = partial + (window.tap_of_place(p) * in_lanes + c0) * NP + n0;
          }
          window_weight_grad_sums<A, Bytes, kWindowChannels>(taps.count, grad + g * N + n0, s.out_width(), x,
                                                             s.in_width(), window.lowest, run.first, run.last,
                                                             columns, place_sums, NP);
        }
      }
    }
  }
}

}  // namespace cpu
}  // namespace padkern
