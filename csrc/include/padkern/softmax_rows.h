// The CPU attention's per-row softmax loops (csrc/cpu/attention*.h), vectorised in every
// clone: exp is host_exp_nonpositive (no libm call, which kept these loops scalar: a third of
// the forward's time), and the max a simd reduction. tests/test_scalar_math.py checks that
// every clone vectorises them.
#pragma once
#include <cstdint>
#include <limits>

#include "padkern/scalar_math.h"
#include "padkern/vector_clones.h"

namespace padkern {

// The largest entry of row[0, cols), -inf for none. A NaN entry may or may not win; its
// row's softmax is NaN either way.
template <typename T>
PADKERN_VECTOR_CLONES T row_peak(const T* __restrict row, int64_t cols) {
  T peak = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : peak)
  for (int64_t j = 0; j < cols; ++j) peak = row[j] > peak ? row[j] : peak;
  return peak;
}

// row[j] = exp(row[j] - shift), in place; returns their sum. `shift` is never -inf (callers
// take 0 for a row of -inf). A -inf entry (a masked key) gives exactly 0 whatever the shift,
// NaN included, so a NaN row reaches only the keys it sees; otherwise as std::exp (exp(-inf)
// 0, NaN stays NaN; an argument is +inf only in a row that holds a NaN, whose sum is NaN
// anyway: elsewhere the shift is at least every score), but 0 wherever the argument lies below
// host_exp's floor (-87 float, -708 double), as a flush to zero would give and as the segment
// softmax's column_exps: with the row's peak (forward) or log-sum-exp (backward) as the shift, a
// key that far below the peak weighs nothing and gets no gradient.
template <typename T>
PADKERN_VECTOR_CLONES T exp_shifted_row(T* __restrict row, int64_t cols, T shift) {
  const T neg_inf = -std::numeric_limits<T>::infinity();
  T sum = 0;
  if (shift != shift) {  // NaN: the rare row whose scores hold a NaN
    for (int64_t j = 0; j < cols; ++j) sum += row[j] = row[j] == neg_inf ? T(0) : shift;
    return sum;
  }
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < cols; ++j) {
    const T score = row[j], x = score - shift;
    // Masked and far keys are zeroed by a factor, not a select: gcc keeps a select on the
    // loop's input scalar (as in host_exp's history). host_exp's result is finite there, so
    // the product is 0; a NaN x passes the test and stays NaN.
    const T keep = static_cast<T>((score != neg_inf) & !(x < host_exp_floor<T>()));
    row[j] = host_exp_nonpositive(x) * keep;
    sum += row[j];
  }
  return sum;
}

// sum_j a[j] b[j], as a simd reduction: the backward's delta_i = dO_i . O_i for each query row.
// The sum runs in lane order, so its last bits differ between clones (16, 8 or 4 lanes) as the
// GEMMs' own do between machines; its error bound is a left-to-right sum's or better.
template <typename T>
PADKERN_VECTOR_CLONES T row_dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) sum += a[j] * b[j];
  return sum;
}

// ds[j] = scale p[j] (ds[j] - delta) in place, dS from dP: score_gradient (attention_tile.h)
// over a row, 0 wherever p[j] is 0 (masked keys, a row without weight), NaN or not.
template <typename T>
PADKERN_VECTOR_CLONES void score_gradient_row(const T* __restrict p, T* __restrict ds, int64_t cols, T delta,
                                              T scale) {
#pragma omp simd
  for (int64_t j = 0; j < cols; ++j) {
    const T gradient = scale * (p[j] * (ds[j] - delta));
    ds[j] = p[j] == T(0) ? T(0) : gradient;
  }
}

}  // namespace padkern
