// Checks csrc/include/padkern/conv1d_layout.h (the ragged convolution's index maths, run
// by the CUDA kernels) against a direct statement of the rule: output token t of a
// sequence reads, through tap j, the token t + j * dilation - left_pad when that token is
// in the same sequence; the input-gradient taps are the exact mirror of the forward ones.
#include <cstdint>
#include <cstdio>
#include <vector>

#include "padkern/conv1d_layout.h"

static int failures = 0;

#define EXPECT(condition, ...)                 \
  do {                                         \
    if (!(condition)) {                        \
      std::printf("FAILED %s: ", #condition); \
      std::printf(__VA_ARGS__);                \
      std::printf("\n");                       \
      ++failures;                              \
    }                                          \
  } while (0)

int main() {
  using namespace padkern;
  const std::vector<std::vector<int64_t>> lengths_cases = {{3, 0, 6, 1, 4}, {0, 0, 5}, {1, 1, 1}, {7}, {2, 0}};
  for (const auto& lengths : lengths_cases) {
    std::vector<int64_t> offsets = {0};
    std::vector<int64_t> owner;
    for (size_t b = 0; b < lengths.size(); ++b) {
      offsets.push_back(offsets.back() + lengths[b]);
      for (int64_t i = 0; i < lengths[b]; ++i) owner.push_back(static_cast<int64_t>(b));
    }
    const int64_t batch = static_cast<int64_t>(lengths.size()), rows = offsets.back();
    for (int64_t k = 1; k <= 5; ++k) {
      for (int64_t dilation = 1; dilation <= 3; ++dilation) {
        for (int64_t left = 0; left <= dilation * (k - 1); ++left) {
          const ConvTaps forward = forward_taps(k, left, dilation), mirrored = mirrored_taps(k, left, dilation);
          for (int64_t t = 0; t < rows; ++t) {
            const SequenceSpan span = token_span(offsets.data(), batch, rows, t);
            EXPECT(span.bos == offsets[owner[t]] && span.eos == offsets[owner[t] + 1], "token %lld span",
                   static_cast<long long>(t));
            for (int64_t j = 0; j < k; ++j) {
              const int64_t want = t + j * dilation - left;
              const bool inside = want >= 0 && want < rows && owner[want] == owner[t];
              const int64_t got = tap_source(t, tap_shift(forward, j), span);
              EXPECT(got == (inside ? want : -1), "t=%lld j=%lld k=%lld dilation=%lld left=%lld", static_cast<long long>(t),
                     static_cast<long long>(j), static_cast<long long>(k), static_cast<long long>(dilation),
                     static_cast<long long>(left));
              // Mirror: s reads t through the mirrored tap j exactly when t reads s through tap j.
              if (inside) {
                const SequenceSpan source_span = token_span(offsets.data(), batch, rows, want);
                EXPECT(tap_source(want, tap_shift(mirrored, j), source_span) == t, "mirror of t=%lld j=%lld",
                       static_cast<long long>(t), static_cast<long long>(j));
              }
            }
          }
        }
      }
    }
  }
  // Offsets that break the contract (unchecked on a GPU): sources stay inside [0, rows).
  const std::vector<int64_t> garbage = {5, -3, 40, 2};
  for (int64_t t = 0; t < 10; ++t) {
    const SequenceSpan span = token_span(garbage.data(), 3, 10, t);
    for (int64_t shift = -12; shift <= 12; ++shift) {
      const int64_t source = tap_source(t, shift, span);
      EXPECT(source == -1 || (source >= 0 && source < 10), "garbage offsets t=%lld shift=%lld",
             static_cast<long long>(t), static_cast<long long>(shift));
    }
  }
  if (failures == 0) std::printf("conv1d layout: all checks passed\n");
  return failures == 0 ? 0 : 1;
}
