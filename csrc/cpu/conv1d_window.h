// The grouped convolution's window paths (conv1d_grouped.h): where the taps are one row apart
// (k = 2..5, dilation 1), a tile of tokens away from its sequence's edges reads one window of
// rows, and each input element is broadcast once into every sum it feeds, where the general
// tile loads a broadcast per multiply-add (on a Zen 5 core those loads, not the multiply-adds,
// bounded it). These helpers are always inlined into the kernels' per-ISA clones.
#pragma once
#include <ATen/OpMathType.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "padkern/conv1d_layout.h"

namespace padkern {
namespace cpu {

// A register of W = Bytes / sizeof(A) lanes (a member typedef: gcc drops the attribute from an
// alias template).
template <typename A, int Bytes>
struct LanesOf {
  typedef A type __attribute__((vector_size(Bytes)));
};
template <typename A, int Bytes>
using Lanes = typename LanesOf<A, Bytes>::type;

// The taps as a window of rows: with dilation 1, tap j of token t reads row t + lowest + the
// tap's place in the window (j forward, k - 1 - j for the mirrored input-gradient taps).
struct TapWindow {
  int64_t lowest, highest;  // the smallest and largest shift
  int64_t count;
  bool mirrored;

  // The tap whose weights window place p takes.
  int64_t tap_of_place(int64_t p) const { return mirrored ? count - 1 - p : p; }

  // Whether tokens first..last, and every row their taps read, lie inside `span` (every
  // padding has lowest <= 0 <= highest, so the min and max change nothing: they keep the
  // tokens themselves inside the span whatever the taps).
  bool holds(int64_t first, int64_t last, const SequenceSpan& span) const {
    return first + std::min<int64_t>(lowest, 0) >= span.bos && last + std::max<int64_t>(highest, 0) < span.eos;
  }
};

inline TapWindow tap_window(ConvTaps taps) {
  const int64_t last = tap_shift(taps, taps.count - 1);
  return {std::min(taps.first_shift, last), std::max(taps.first_shift, last), taps.count, taps.step < 0};
}

// Taps an interior tile unrolls for (taps of one row apart): the common kernel sizes.
constexpr int64_t kMostUnrolledTaps = 5;
inline bool window_unrolled(ConvTaps taps) {
  return (taps.step == 1 || taps.step == -1) && taps.count >= 2 && taps.count <= kMostUnrolledTaps;
}

// One interior tile's sums for group g, lanes n0..: M tokens of one sequence whose every tap
// reads a row of it, so token i's tap at window place p reads window row i + p. Each input
// element is broadcast once and multiplied into every sum it feeds (up to K): the general
// tile loads a broadcast per multiply-add, and on a Zen 5 core its loads, not its
// multiply-adds, bounded it. Registers: M sums + K weights + 1 broadcast.
template <typename scalar_t, int Bytes, int K, int M>
__attribute__((always_inline)) inline void window_tile_sums(const scalar_t* window, int64_t width, int64_t C,
                                                            int64_t lanes_stride,
                                                            const at::opmath_type<scalar_t>* const* place_weights,
                                                            Lanes<at::opmath_type<scalar_t>, Bytes>* acc) {
  using A = at::opmath_type<scalar_t>;
  using Vec = Lanes<A, Bytes>;
  for (int64_t c = 0; c < C; ++c) {
    Vec w[K];
#pragma GCC unroll 8
    for (int p = 0; p < K; ++p) std::memcpy(&w[p], place_weights[p] + c * lanes_stride, sizeof(Vec));
    const scalar_t* column = window + c;
#pragma GCC unroll 24
    for (int r = 0; r < M + K - 1; ++r) {
      const A value = static_cast<A>(column[r * width]);
#pragma GCC unroll 8
      for (int p = 0; p < K; ++p) {
        const int i = r - p;
        if (i >= 0 && i < M) acc[i] += value * w[p];
      }
    }
  }
}

template <typename scalar_t, int Bytes, int M>
__attribute__((always_inline)) inline void window_tile_sums(int64_t taps, const scalar_t* window, int64_t width,
                                                            int64_t C, int64_t lanes_stride,
                                                            const at::opmath_type<scalar_t>* const* place_weights,
                                                            Lanes<at::opmath_type<scalar_t>, Bytes>* acc) {
  static_assert(kMostUnrolledTaps == 5, "a case per tap count window_unrolled admits");
  switch (taps) {
    case 2: return window_tile_sums<scalar_t, Bytes, 2, M>(window, width, C, lanes_stride, place_weights, acc);
    case 3: return window_tile_sums<scalar_t, Bytes, 3, M>(window, width, C, lanes_stride, place_weights, acc);
    case 4: return window_tile_sums<scalar_t, Bytes, 4, M>(window, width, C, lanes_stride, place_weights, acc);
    default: return window_tile_sums<scalar_t, Bytes, 5, M>(window, width, C, lanes_stride, place_weights, acc);  // 5
  }
}

// One row of window_weight_grad_sums' walk: the gradients slide by one (gradients[p] becomes
// token row - lowest - p's, zero past the run), then the row's elements times them join the
// sums of places lo..hi, those whose token lies in the run. Near a run's ends the other places'
// gradients are stand-in zeros, and an infinite element times one would put NaN into a sum the
// element does not belong to. The callers' lo and hi are constants once their loops unroll.
template <typename A, int Bytes, int K, int R>
__attribute__((always_inline)) inline void window_weight_grad_row(int64_t row, const A* grad, int64_t grad_width,
                                                                  const A* x, int64_t x_width, int64_t lowest,
                                                                  int64_t last, const int64_t* columns, int64_t lo,
                                                                  int64_t hi, Lanes<A, Bytes> (&gradients)[K],
                                                                  Lanes<A, Bytes> (&acc)[K][R]) {
  using Vec = Lanes<A, Bytes>;
#pragma GCC unroll 8
  for (int p = K - 1; p > 0; --p) gradients[p] = gradients[p - 1];
  const int64_t newest = row - lowest;  // the token at place 0
  if (newest < last) {
    std::memcpy(&gradients[0], grad + newest * grad_width, sizeof(Vec));
  } else {
    gradients[0] = Vec{};
  }
  const A* x_row = x + row * x_width;
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const A value = x_row[columns[r]];
#pragma GCC unroll 8
    for (int p = 0; p < K; ++p) {
      if (p >= lo && p <= hi) acc[p][r] += value * gradients[p];
    }
  }
}

// One run of interior tokens [first, last) of one sequence in group g's weight gradient, for R
// channels (columns) and the lanes n0..: token t meets row t + lowest + p at window place p,
// so row s meets the gradients of tokens s - lowest - p. Walking the rows, K gradient
// registers slide by one and each input element is broadcast once into K sums; the general
// loop broadcasts once per multiply-add, and was bound by those loads. Registers: K R sums +
// K gradients + 1 broadcast. grad points at the group's lanes n0.., rows grad_width apart;
// place_sums[p] at the partial sums of place p's tap, channel c0, lanes n0 (rows NP apart).
template <typename A, int Bytes, int K, int R>
__attribute__((always_inline)) inline void window_weight_grad_sums(const A* grad, int64_t grad_width, const A* x,
                                                                   int64_t x_width, int64_t lowest, int64_t first,
                                                                   int64_t last, const int64_t* columns,
                                                                   A* const* place_sums, int64_t NP) {
  using Vec = Lanes<A, Bytes>;
  Vec acc[K][R];
  for (int p = 0; p < K; ++p) {
    for (int r = 0; r < R; ++r) std::memcpy(&acc[p][r], place_sums[p] + r * NP, sizeof(Vec));
  }
  Vec gradients[K] = {};
  // Rows first + lowest .. last + lowest + K - 2. Row first + lowest + q meets the run's
  // tokens at places max(0, q - (last - first) + 1) .. min(K - 1, q).
  int64_t row = first + lowest;
  if (last - first >= K - 1) {  // K - 1 rows in, K - 1 rows out, every place in between
#pragma GCC unroll 8
    for (int q = 0; q < K - 1; ++q, ++row) {
      window_weight_grad_row<A, Bytes, K, R>(row, grad, grad_width, x, x_width, lowest, last, columns, 0, q,
                                             gradients, acc);
    }
    for (; row < last + lowest; ++row) {
      window_weight_grad_row<A, Bytes, K, R>(row, grad, grad_width, x, x_width, lowest, last, columns, 0, K - 1,
                                             gradients, acc);
    }
#pragma GCC unroll 8
    for (int e = 0; e < K - 1; ++e, ++row) {
      window_weight_grad_row<A, Bytes, K, R>(row, grad, grad_width, x, x_width, lowest, last, columns, e + 1, K - 1,
                                             gradients, acc);
    }
  } else {  // a run shorter than the window
    for (int64_t q = 0; q < last - first + K - 1; ++q, ++row) {
      window_weight_grad_row<A, Bytes, K, R>(row, grad, grad_width, x, x_width, lowest, last, columns,
                                             std::max<int64_t>(0, q - (last - first) + 1), std::min<int64_t>(K - 1, q),
                                             gradients, acc);
    }
  }
  for (int p = 0; p < K; ++p) {
    for (int r = 0; r < R; ++r) std::memcpy(place_sums[p] + r * NP, &acc[p][r], sizeof(Vec));
  }
}

template <typename A, int Bytes, int R>
__attribute__((always_inline)) inline void window_weight_grad_sums(int64_t taps, const A* grad, int64_t grad_width,
                                                                   const A* x, int64_t x_width, int64_t lowest,
                                                                   int64_t first, int64_t last, const int64_t* columns,
                                                                   A* const* place_sums, int64_t NP) {
  static_assert(kMostUnrolledTaps == 5, "a case per tap count window_unrolled admits");
  switch (taps) {
    case 2:
      return window_weight_grad_sums<A, Bytes, 2, R>(grad, grad_width, x, x_width, lowest, first, last, columns,
                                                     place_sums, NP);
    case 3:
      return window_weight_grad_sums<A, Bytes, 3, R>(grad, grad_width, x, x_width, lowest, first, last, columns,
                                                     place_sums, NP);
    case 4:
      return window_weight_grad_sums<A, Bytes, 4, R>(grad, grad_width, x, x_width, lowest, first, last, columns,
                                                     place_sums, NP);
    default:  // 5
      return window_weight_grad_sums<A, Bytes, 5, R>(grad, grad_width, x, x_width, lowest, first, last, columns,
                                                     place_sums, NP);
  }
}

}  // namespace cpu
}  // namespace padkern
