// The CPU segment ops' loops over a sequence's rows [count, features], per feature column: the
// maximum and its row (segment_max), and the softmax's peaks, exps (kept in the output) and
// sums, then its division. Vectorised in every clone (tests/test_scalar_math.py reads the
// clones' machine code): exp is host_exp_nonpositive (each column less its peak), where libm's
// exp kept the softmax scalar, and the maximum's choice of row a select, where a branch kept
// segment_max 13x slower than the sum.
// A: the arithmetic type; S: the stored one.
#pragma once
#include <cstdint>
#include <limits>

#include "padkern/scalar_math.h"
#include "padkern/vector_clones.h"

namespace padkern {

// peak[d] = the column's maximum over the rows (count >= 1) and arg[d] = first_row plus the
// first row holding it; the first NaN takes the place and keeps it (NaN propagates, as in
// torch.amax), and a column of -inf gives -inf at row 0.
template <typename A, typename S>
PADKERN_VECTOR_CLONES void column_maxima(const S* __restrict rows, int64_t count, int64_t first_row,
                                         A* __restrict peak, int64_t* __restrict arg, int64_t features) {
  for (int64_t d = 0; d < features; ++d) {
    peak[d] = static_cast<A>(rows[d]);
    arg[d] = first_row;
  }
  for (int64_t t = 1; t < count; ++t) {
    const S* row = rows + t * features;
    for (int64_t d = 0; d < features; ++d) {
      // The best so far read once: read again inside the condition, it made the loop 3x slower.
      const A value = static_cast<A>(row[d]), best = peak[d];
      const bool take = (value > best) | ((value != value) & (best == best));
      peak[d] = take ? value : best;
      arg[d] = take ? first_row + t : arg[d];
    }
  }
}

// peak[d] = the column's maximum over the rows, -inf when count is 0; a NaN entry never wins
// (its column's exps are NaN anyway).
template <typename A, typename S>
PADKERN_VECTOR_CLONES void column_peaks(const S* __restrict rows, int64_t count, A* __restrict peak, int64_t features) {
  for (int64_t d = 0; d < features; ++d) peak[d] = -std::numeric_limits<A>::infinity();
  for (int64_t t = 0; t < count; ++t) {
    const S* row = rows + t * features;
    for (int64_t d = 0; d < features; ++d) {
      const A value = static_cast<A>(row[d]);
      peak[d] = value > peak[d] ? value : peak[d];
    }
  }
}

// out[t, d] = exp(rows[t, d] - peak[d]) and total[d] = their sum over the rows. As std::exp,
// NaN and -inf included, but 0 wherever the argument lies below host_exp's floor (-87 for float, where e^x
// is under 1.7e-38; -708 for double), as a flush to zero would give: by a factor, not a
// select, which gcc keeps on the loop's input scalar. A NaN argument (a NaN entry, or -inf
// minus the -inf peak of an all -inf column, as in the reference) stays NaN.
template <typename A, typename S>
PADKERN_VECTOR_CLONES void column_exps(const S* __restrict rows, int64_t count, const A* __restrict peak,
                                       A* __restrict total, S* __restrict out, int64_t features) {
  for (int64_t d = 0; d < features; ++d) total[d] = A(0);
  for (int64_t t = 0; t < count; ++t) {
    const S* row = rows + t * features;
    S* out_row = out + t * features;
    for (int64_t d = 0; d < features; ++d) {
      const A shifted = static_cast<A>(row[d]) - peak[d];
      const A keep = static_cast<A>(!(shifted < host_exp_floor<A>()));
      const S e = static_cast<S>(host_exp_nonpositive(shifted) * keep);
      out_row[d] = e;
      total[d] += static_cast<A>(e);
    }
  }
}

// out[t, d] /= total[d].
template <typename A, typename S>
PADKERN_VECTOR_CLONES void divide_columns(S* __restrict out, int64_t count, const A* __restrict total,
                                          int64_t features) {
  for (int64_t t = 0; t < count; ++t) {
    S* out_row = out + t * features;
    for (int64_t d = 0; d < features; ++d) out_row[d] = static_cast<S>(static_cast<A>(out_row[d]) / total[d]);
  }
}

}  // namespace padkern
