// The host exp behind every CPU gate and activation (csrc/include/padkern/scalar_math.h)
// against libm: accuracy over the whole finite range, overflow to inf where e^x overflows
// (exp(+inf) included), NaN kept. Exit status 1 and a message on the first failure.
#include <cmath>
#include <cstdio>
#include <limits>

#include "padkern/scalar_math.h"

namespace {

int failures = 0;

void expect(bool ok, const char* what, double x, double got, double want) {
  if (!ok && failures++ < 10) std::fprintf(stderr, "%s: x=%.17g got %.17g want %.17g\n", what, x, got, want);
}

// Relative error within `ulps` units of the type's epsilon where e^x is finite, inf where it
// overflows; inputs stepped across [lo, hi].
template <typename F>
void check_range(F lo, F hi, double step, double ulps) {
  const double eps = std::numeric_limits<F>::epsilon();
  const double largest = std::numeric_limits<F>::max();
  for (double t = lo; t <= hi; t += step) {
    const F x = static_cast<F>(t);
    const F got = padkern::host_exp(x);
    const double want = std::exp(static_cast<double>(x));
    if (want > largest * (1 + ulps * eps)) {
      expect(std::isinf(got), "overflow to inf", x, got, want);
    } else if (want < largest * (1 - ulps * eps)) {
      expect(std::fabs(got - want) <= ulps * eps * want, "relative error", x, got, want);
    }  // within a few ulps of the largest finite value either answer is right
  }
}

template <typename F>
void check_special() {
  const F inf = std::numeric_limits<F>::infinity();
  expect(padkern::host_exp(inf) == inf, "exp(+inf)", inf, padkern::host_exp(inf), inf);
  const F nan = std::numeric_limits<F>::quiet_NaN();
  expect(std::isnan(padkern::host_exp(nan)), "exp(nan)", nan, padkern::host_exp(nan), nan);
  // -inf clamps to the smallest normal result, so a sigmoid of +inf is exactly 1.
  expect(padkern::sigmoid_of(inf) == F(1), "sigmoid(+inf)", inf, padkern::sigmoid_of(inf), 1);
  expect(padkern::sigmoid_of(-inf) == F(0), "sigmoid(-inf)", -inf, padkern::sigmoid_of(-inf), 0);
}

}  // namespace

int main() {
  check_range<float>(-87.0f, 90.0f, 1e-3, 2.0);
  check_range<double>(-708.0, 711.0, 1e-2, 4.0);
  check_special<float>();
  check_special<double>();
  if (failures) std::fprintf(stderr, "%d failures\n", failures);
  return failures ? 1 : 0;
}
