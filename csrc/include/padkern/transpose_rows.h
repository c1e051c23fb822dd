// Transposed copies of row-major blocks for the CPU kernels whose GEMM micro-kernel (oneDNN's
// brgemm) reads both operands row-major: the attention's keys, values, query and output-gradient
// tiles and its dK/dV blocks, ragged_outer_bmm's token chunks. Whole 8 x 8 blocks go through
// three rounds of shuffles in gcc's vector extensions, so each clone (vector_clones.h) gets its
// own shuffles: 8-float registers with AVX-512 and AVX2, pairs of SSE registers in the default
// clone. 0.07 ns an element on a Zen 5 core where an element loop takes 0.5 (a [64, 64] tile from
// rows 512 floats apart): in the attention backward the element loops had cost a third as much
// as its GEMMs.
#pragma once
#include <cstdint>
#include <cstring>

#include "padkern/vector_clones.h"

namespace padkern {
namespace transpose_detail {

typedef float Lanes8 __attribute__((vector_size(32)));

// The result's lane i is element index_i of the concatenation (a, b): gcc's __builtin_shuffle
// takes the indices as a vector, clang's __builtin_shufflevector as constants.
#if defined(__clang__)
#define PADKERN_SHUFFLE8(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
typedef int32_t Picks8 __attribute__((vector_size(32)));
#define PADKERN_SHUFFLE8(a, b, ...) __builtin_shuffle(a, b, Picks8{__VA_ARGS__})
#endif

// An 8 x 8 block, row i in lanes[i], becomes its transpose, column i in lanes[i]. Each round
// interleaves pairs of registers at twice the previous round's granularity (1, 2, then 4 floats).
inline void transpose_8x8(Lanes8 (&lanes)[8]) {
  Lanes8 pairs[8], quads[8];
  for (int i = 0; i < 8; i += 2) {
    pairs[i] = PADKERN_SHUFFLE8(lanes[i], lanes[i + 1], 0, 8, 2, 10, 4, 12, 6, 14);
    pairs[i + 1] = PADKERN_SHUFFLE8(lanes[i], lanes[i + 1], 1, 9, 3, 11, 5, 13, 7, 15);
  }
  for (int i = 0; i < 8; i += 4) {
    for (int j = i; j < i + 2; ++j) {
      quads[j] = PADKERN_SHUFFLE8(pairs[j], pairs[j + 2], 0, 1, 8, 9, 4, 5, 12, 13);
      quads[j + 2] = PADKERN_SHUFFLE8(pairs[j], pairs[j + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    }
  }
  for (int j = 0; j < 4; ++j) {
    lanes[j] = PADKERN_SHUFFLE8(quads[j], quads[j + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    lanes[j + 4] = PADKERN_SHUFFLE8(quads[j], quads[j + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}

// transpose_rows's work, without clones of its own: each clone of transpose_rows inlines it for
// its target, and tests/cpp/transpose_rows_test.cpp compiles it at each x86-64 level.
inline __attribute__((always_inline)) void transpose_rows_body(const float* __restrict src, int64_t lds, int64_t rows,
                                                               int64_t cols, float* __restrict dst, int64_t ldd,
                                                               float scale) {
  auto put = [&](float* out, float value) { *out = scale * value; };
  const int64_t whole_rows = rows / 8 * 8, whole_cols = cols / 8 * 8;
  for (int64_t r0 = 0; r0 < whole_rows; r0 += 8) {
    for (int64_t c0 = 0; c0 < whole_cols; c0 += 8) {
      Lanes8 lanes[8];
      for (int i = 0; i < 8; ++i) std::memcpy(&lanes[i], src + (r0 + i) * lds + c0, sizeof(Lanes8));
      transpose_8x8(lanes);
      for (int i = 0; i < 8; ++i) {
        float* out = dst + (c0 + i) * ldd + r0;
        const Lanes8 value = lanes[i] * scale;
        std::memcpy(out, &value, sizeof(Lanes8));
      }
    }
    for (int64_t c = whole_cols; c < cols; ++c) {
      for (int64_t r = r0; r < r0 + 8; ++r) put(dst + c * ldd + r, src[r * lds + c]);
    }
  }
  for (int64_t r = whole_rows; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) put(dst + c * ldd + r, src[r * lds + c]);
  }
}

#undef PADKERN_SHUFFLE8

}  // namespace transpose_detail

// dst[c * ldd + r] = scale * src[r * lds + c] for r < rows, c < cols. src and dst must not
// overlap; nothing outside those elements is read or written.
PADKERN_VECTOR_CLONES inline void transpose_rows(const float* __restrict src, int64_t lds, int64_t rows, int64_t cols,
                                                 float* __restrict dst, int64_t ldd, float scale = 1.0f) {
  transpose_detail::transpose_rows_body(src, lds, rows, cols, dst, ldd, scale);
}

}  // namespace padkern
