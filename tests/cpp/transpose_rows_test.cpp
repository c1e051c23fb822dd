// The CPU kernels' block transpose (csrc/include/padkern/transpose_rows.h) against an element
// loop, at the x86-64 level it is compiled for: every shape from whole 8 x 8 blocks to their
// ragged edges, strides wider than the rows, scaled, and not one element written
// outside the transposed region (NaN sentinels there must survive). Exit status 1 and a message
// on the first failure.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "padkern/transpose_rows.h"

namespace {

int failures = 0;

void check_shape(int64_t rows, int64_t cols, int64_t lds, int64_t ldd, float scale, bool cloned) {
  const float nan = std::nanf("");
  // NaN past the last row and in each row's padding: a read outside the region reaches an output.
  std::vector<float> src((rows + 1) * lds + 8, nan), dst(cols * ldd + 8, nan), want;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) src[r * lds + c] = static_cast<float>(r * 1000 + c) + 0.25f;
  }
  for (int64_t c = 0; c < cols; ++c) {
    for (int64_t r = 0; r < rows; ++r) dst[c * ldd + r] = static_cast<float>(-c - 7 * r);
  }
  want = dst;
  for (int64_t c = 0; c < cols; ++c) {
    for (int64_t r = 0; r < rows; ++r) {
      want[c * ldd + r] = scale * src[r * lds + c];
    }
  }
  if (cloned) {
    padkern::transpose_rows(src.data(), lds, rows, cols, dst.data(), ldd, scale);
  } else {
    padkern::transpose_detail::transpose_rows_body(src.data(), lds, rows, cols, dst.data(), ldd, scale);
  }
  for (size_t i = 0; i < dst.size(); ++i) {
    const bool same = std::isnan(want[i]) ? std::isnan(dst[i]) : dst[i] == want[i];
    if (!same && failures++ < 10) {
      std::fprintf(stderr, "rows %ld cols %ld lds %ld ldd %ld scale %g cloned %d: element %zu is %g, want %g\n",
                   static_cast<long>(rows), static_cast<long>(cols), static_cast<long>(lds), static_cast<long>(ldd),
                   scale, cloned, i, dst[i], want[i]);
    }
  }
}

}  // namespace

int main() {
  const int64_t sizes[] = {0, 1, 7, 8, 9, 15, 16, 17, 24, 64, 65};
  for (int64_t rows : sizes) {
    for (int64_t cols : sizes) {
      for (int64_t pad : {0, 3}) {
        check_shape(rows, cols, cols + pad, rows + pad, 1.0f, false);
        check_shape(rows, cols, cols + pad, rows + pad, 0.125f, false);
      }
    }
  }
  check_shape(64, 64, 512, 80, 0.125f, true);
  check_shape(23, 41, 48, 24, 1.0f, true);
  if (failures) std::fprintf(stderr, "%d failures\n", failures);
  return failures ? 1 : 0;
}
