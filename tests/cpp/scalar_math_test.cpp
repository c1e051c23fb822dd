// The host exp behind every CPU gate and activation (csrc/include/padkern/scalar_math.h)
// against libm: accuracy over the whole finite range, overflow to inf where e^x overflows
// (exp(+inf) included), NaN kept. The host normal CDF behind gelu against libm's erfc in
// double: relative accuracy wherever it is a normal float, and its edges. Exit status 1 and
// a message on the first failure. The softmax's exp (arguments up to 0) against libm and host_exp.
#include <cfenv>
#include <cmath>
#include <cstdio>
#include <initializer_list>
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

// Phi(z) within 10 ulps (relative) from z = -12.94 up (every float measured at most 8.9 ulps
// off), exactly 0 below, where it is under 1.4e-38; z stepped by `step` plus the floats beside
// each crossing point of the formula (z = 0 and the clamps at -12.94 and 6). No intermediate
// may be subnormal (an x86 microcode assist each): the underflow flag stays clear.
void check_normal_cdf(double step) {
  const double eps = std::numeric_limits<float>::epsilon();
  std::feclearexcept(FE_ALL_EXCEPT);
  float sink = 0;
  for (double t = -20.0; t <= 20.0; t += step) sink += padkern::host_normal_cdf(static_cast<float>(t));
  expect(!std::fetestexcept(FE_UNDERFLOW), "normal cdf went through a subnormal", 0, sink, 0);
  auto check = [&](float z) {
    const float got = padkern::host_normal_cdf(z);
    const double want = 0.5 * std::erfc(-static_cast<double>(z) / std::sqrt(2.0));
    if (z >= -12.94f) {
      expect(std::fabs(got - want) <= 10 * eps / 2 * want, "normal cdf relative error", z, got, want);
    } else {
      expect(got == 0 && want < 1.4e-38, "normal cdf below -12.94", z, got, want);
    }
  };
  for (double t = -20.0; t <= 20.0; t += step) check(static_cast<float>(t));
  for (const float edge : {0.0f, 6.0f, -12.94f}) {
    check(edge);
    check(std::nextafter(edge, -1e9f));
    check(std::nextafter(edge, 1e9f));
  }
  const float inf = std::numeric_limits<float>::infinity();
  expect(padkern::host_normal_cdf(inf) == 1.0f, "cdf(+inf)", inf, padkern::host_normal_cdf(inf), 1);
  expect(padkern::host_normal_cdf(-inf) == 0.0f, "cdf(-inf)", -inf, padkern::host_normal_cdf(-inf), 0);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  expect(std::isnan(padkern::host_normal_cdf(nan)), "cdf(nan)", nan, padkern::host_normal_cdf(nan), nan);
  // gelu = z Phi(z): +inf at +inf, NaN at -inf as the erf formula (-inf * 0), NaN kept.
  expect(padkern::activate<padkern::kGelu>(inf) == inf, "gelu(+inf)", inf, padkern::activate<padkern::kGelu>(inf), inf);
  expect(std::isnan(padkern::activate<padkern::kGelu>(-inf)), "gelu(-inf)", -inf,
         padkern::activate<padkern::kGelu>(-inf), nan);
}

// The softmax's exp (host_exp_nonpositive) over [-87, 0] and a little above, where rounding
// puts a score past its row's peak or log-sum-exp: within 2 ulps of libm, and the same as
// host_exp but for the ties their roundings of n break differently (an ulp or two); NaN kept.
void check_exp_nonpositive(double step) {
  const double eps = std::numeric_limits<float>::epsilon();
  for (double t = -87.0; t <= 0.3; t += step) {
    const float x = static_cast<float>(t);
    const float got = padkern::host_exp_nonpositive(x);
    const double want = std::exp(static_cast<double>(x));
    expect(std::fabs(got - want) <= 2 * eps * want, "nonpositive exp: relative error", x, got, want);
    const float other = padkern::host_exp(x);
    expect(std::fabs(got - other) <= 2 * eps * other, "nonpositive exp against host_exp", x, got, other);
  }
  const float nan = std::numeric_limits<float>::quiet_NaN();
  expect(std::isnan(padkern::host_exp_nonpositive(nan)), "nonpositive exp(nan)", nan,
         padkern::host_exp_nonpositive(nan), nan);
  expect(padkern::host_exp_nonpositive(-1000.0f) == padkern::host_exp(-87.0f), "nonpositive exp below the floor",
         -1000.0, padkern::host_exp_nonpositive(-1000.0f), padkern::host_exp(-87.0f));
  // Above 0.3 only the clamp's promise: e^88 for anything past 88, +inf included, and 2^n finite.
  const float inf = std::numeric_limits<float>::infinity();
  const float top = padkern::host_exp_nonpositive(88.0f);
  expect(std::fabs(top - std::exp(88.0)) <= 2 * eps * std::exp(88.0), "nonpositive exp(88)", 88.0, top, std::exp(88.0));
  expect(padkern::host_exp_nonpositive(inf) == top && padkern::host_exp_nonpositive(1e30f) == top,
         "nonpositive exp above 88", inf, padkern::host_exp_nonpositive(inf), top);
  const float mid = padkern::host_exp_nonpositive(40.5f);
  expect(std::fabs(mid - std::exp(40.5)) <= 2 * eps * std::exp(40.5), "nonpositive exp(40.5)", 40.5, mid,
         std::exp(40.5));
}

}  // namespace

int main() {
  check_range<float>(-87.0f, 90.0f, 1e-3, 2.0);
  check_range<double>(-708.0, 711.0, 1e-2, 4.0);
  check_special<float>();
  check_special<double>();
  check_normal_cdf(1e-4);
  check_exp_nonpositive(1e-4);
  if (failures) std::fprintf(stderr, "%d failures\n", failures);
  return failures ? 1 : 0;
}
