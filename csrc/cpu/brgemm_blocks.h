// float32 row-major products through torch's at::native::cpublas::brgemm: oneDNN's brgemm
// micro-kernel, generated once per shape, cached per thread and then called with raw
// pointers. A call through at::mm or torch's oneDNN linear spends 4-10 us before any
// arithmetic (dispatch, tensor wrapping, primitive lookup); this one about 1 us, which is
// what a recurrence's 256 small steps and a batch's per-sequence products add up. Where
// oneDNN's micro-kernel is unavailable (no AVX2, torch.backends.mkldnn disabled) torch's
// brgemm falls back to its BLAS with the same contract.
#pragma once
#include <ATen/native/CPUBlas.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "padkern/int_math.h"
#include "padkern/transpose_rows.h"

namespace padkern {
namespace cpu {

// brgemm_product's calls cover at most kBrgemmRows x kBrgemmColumns of the product (other
// callers keep their shapes bounded their own way: see attention_brgemm.h). Every thread caches
// a kernel per distinct shape and never frees it, so the row bound keeps a (K, leading
// dimensions) pair to at most 64 row counts times a few widths, however many rows a product
// has; and a block's 128 columns of B at K = 256 are 128 KiB, resident in L2 beside its rows.
constexpr int64_t kBrgemmRows = 64;
constexpr int64_t kBrgemmColumns = 128;

// c (+)= a @ b for one block: a [m, k] (row stride lda), b [k, n] (ldb), c [m, n] (ldc),
// k >= 1, leading dimensions no less than the widths. Accumulates onto c when `accumulate`,
// else never reads it. Each distinct shape is a kernel of its own: callers keep them few.
inline void brgemm_block(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                         float* c, int64_t ldc, bool accumulate) {
  at::native::cpublas::brgemm(m, n, k, lda, ldb, ldc, accumulate, a, b, c, /*is_vnni=*/false);
}

// c (+)= a @ b in full, block by block on the calling thread; k == 0 zeroes c (or leaves it).
// Rows no closer than their width: lda >= k, ldb >= n, ldc >= n.
inline void brgemm_product(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                           float* c, int64_t ldc, bool accumulate) {
  if (k == 0) {
    if (!accumulate) {
      for (int64_t r = 0; r < m; ++r) std::fill_n(c + r * ldc, n, 0.0f);
    }
    return;
  }
  for (int64_t row = 0; row < m; row += kBrgemmRows) {
    for (int64_t column = 0; column < n; column += kBrgemmColumns) {
      brgemm_block(std::min(kBrgemmRows, m - row), std::min(kBrgemmColumns, n - column), k, a + row * lda, lda,
                   b + column, ldb, c + row * ldc + column, ldc, accumulate);
    }
  }
}

// brgemm_outer_product reduces over tokens in chunks of kOuterChunkTokens, its last chunk
// rounded up to kOuterTailTokens with zeros: the kernels' depth takes 4 values whatever the
// lengths, at most 15 wasted tokens a sequence, and a chunk's transposed rows stay in L1 for m
// up to 128. Those rows lie kOuterChunkStride floats apart, not a power of two: at 64 (256
// bytes) the transposing stores and brgemm's loads met in the same cache sets, and ragged_bmm's
// weight gradient at B64 T256 K = N = 128 took 1.6-1.7 ms instead of 1.5 on a Zen 5 core.
constexpr int64_t kOuterChunkTokens = 64;
constexpr int64_t kOuterTailTokens = 16;
constexpr int64_t kOuterChunkStride = kOuterChunkTokens + 16;

// c [m, n] = a^T b, summed over `length` >= 0 tokens: a [length, m] with its elements
// a_row_stride and a_column_stride apart, b [length, n] with rows ldb apart (ldb >= n).
inline void brgemm_outer_product(int64_t length, int64_t m, int64_t n, const float* a, int64_t a_row_stride,
                                 int64_t a_column_stride, const float* b, int64_t ldb, float* c, int64_t ldc) {
  if (length == 0) {
    for (int64_t r = 0; r < m; ++r) std::fill_n(c + r * ldc, n, 0.0f);
    return;
  }
  std::vector<float> a_chunk(m * kOuterChunkStride);
  std::vector<float> b_tail;
  for (int64_t t0 = 0; t0 < length; t0 += kOuterChunkTokens) {
    const int64_t count = std::min(kOuterChunkTokens, length - t0);
    const int64_t depth = round_up(count, kOuterTailTokens);
    const float* a_rows = a + t0 * a_row_stride;
    if (a_column_stride == 1) {
      transpose_rows(a_rows, a_row_stride, count, m, a_chunk.data(), kOuterChunkStride);
    } else {  // (a transposed or strided view: element by element, for the same sums in any layout)
      for (int64_t t = 0; t < count; ++t) {
        const float* row = a_rows + t * a_row_stride;
        for (int64_t i = 0; i < m; ++i) a_chunk[i * kOuterChunkStride + t] = row[i * a_column_stride];
      }
    }
    for (int64_t i = 0; i < m; ++i) {
      std::fill(a_chunk.data() + i * kOuterChunkStride + count, a_chunk.data() + i * kOuterChunkStride + depth, 0.0f);
    }
    const float* b_rows = b + t0 * ldb;
    int64_t b_stride = ldb;
    if (depth > count) {
      b_tail.assign(depth * n, 0.0f);
      for (int64_t t = 0; t < count; ++t) std::copy_n(b_rows + t * ldb, n, b_tail.data() + t * n);
      b_rows = b_tail.data();
      b_stride = n;
    }
    brgemm_product(m, n, depth, a_chunk.data(), kOuterChunkStride, b_rows, b_stride, c, ldc, /*accumulate=*/t0 > 0);
  }
}

}  // namespace cpu
}  // namespace padkern
