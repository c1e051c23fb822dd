// The CPU matmuls' fused epilogue over one row of an output: z = row + bias, kept as the
// pre-activation when the backward needs it, then row = activation(z). The activations are
// branch-free (scalar_math.h), so the loop runs on full vector registers in every clone for
// float (tests/test_scalar_math.py reads the clones' machine code); half and bfloat16 use
// the same loop with float arithmetic.
#pragma once
#include <cstdint>

#include "padkern/scalar_math.h"
#include "padkern/vector_clones.h"

namespace padkern {

// A: the arithmetic type (float for float, half and bfloat16; double for double). Bias and
// Save are template flags so the loop body holds no pointer test.
template <typename A, int Act, bool Bias, bool Save, typename T>
PADKERN_VECTOR_CLONES void epilogue_row(T* __restrict row, T* __restrict preactivation, const T* __restrict bias,
                                        int64_t features) {
  for (int64_t n = 0; n < features; ++n) {
    const A z = Bias ? static_cast<A>(row[n]) + static_cast<A>(bias[n]) : static_cast<A>(row[n]);
    if (Save) preactivation[n] = static_cast<T>(z);
    row[n] = static_cast<T>(activate<Act, A>(z));
  }
}

// `rows` consecutive rows of `features` elements each (row-major, contiguous), the
// pre-activation laid out alike when given; bias [features] or null.
template <typename A, int Act, typename T>
void epilogue_rows(T* rows_data, T* preactivation, const T* bias, int64_t rows, int64_t features) {
  for (int64_t r = 0; r < rows; ++r) {
    T* row = rows_data + r * features;
    T* pre = preactivation == nullptr ? nullptr : preactivation + r * features;
    if (bias != nullptr) {
      pre != nullptr ? epilogue_row<A, Act, true, true>(row, pre, bias, features)
                     : epilogue_row<A, Act, true, false>(row, pre, bias, features);
    } else {
      pre != nullptr ? epilogue_row<A, Act, false, true>(row, pre, bias, features)
                     : epilogue_row<A, Act, false, false>(row, pre, bias, features);
    }
  }
}

// The activation chosen at run time (numbered as in padkern/_schemas.py).
template <typename A, typename T>
void apply_epilogue(int activation, T* rows_data, T* preactivation, const T* bias, int64_t rows, int64_t features) {
  switch (activation) {
    case kRelu: return epilogue_rows<A, kRelu>(rows_data, preactivation, bias, rows, features);
    case kGelu: return epilogue_rows<A, kGelu>(rows_data, preactivation, bias, rows, features);
    case kSilu: return epilogue_rows<A, kSilu>(rows_data, preactivation, bias, rows, features);
    default: return epilogue_rows<A, kIdentity>(rows_data, preactivation, bias, rows, features);
  }
}

}  // namespace padkern
