// The per-row maths of padkern's CUDA ragged attention (padkern/attention_tile.h), checked on
// the CPU against direct computations: online softmax against a two-pass softmax, the
// backward's recomputed probabilities and score gradients against finite differences, the
// causal key ranges against the mask they stand for, and the tile schedule against the
// sequences it covers. Built and run by tests/test_attention_tile_maths.py.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "padkern/attention_tile.h"

namespace {

int failures = 0;

void expect(bool ok, const char* what, double got = 0, double want = 0) {
  if (!ok) {
    std::fprintf(stderr, "FAILED %s: got %.17g, expected %.17g\n", what, got, want);
    ++failures;
  }
}

// One row: out = sum_j softmax(s)_j v_j and lse, folded score by score, against two passes.
void online_softmax_matches_two_passes(std::mt19937& rng) {
  std::normal_distribution<double> normal(0.0, 4.0);
  for (int trial = 0; trial < 200; ++trial) {
    const int n = trial % 17;
    const int masked_prefix = trial % 3 == 0 ? n / 2 : 0;  // -inf first: the max stays -inf a while
    std::vector<double> s(n), v(n);
    for (int j = 0; j < n; ++j) {
      s[j] = j < masked_prefix ? -INFINITY : normal(rng);
      v[j] = normal(rng);
    }
    padkern::OnlineSoftmax<double> row = padkern::online_softmax_start<double>();
    double acc = 0;
    for (int j = 0; j < n; ++j) {
      double alpha;
      const double p = padkern::online_softmax_fold(row, s[j], &alpha);
      acc = acc * alpha + p * v[j];
    }
    double peak = -INFINITY, total = 0, weighted = 0;
    for (int j = 0; j < n; ++j) peak = std::fmax(peak, s[j]);
    for (int j = 0; j < n; ++j) {
      const double e = peak == -INFINITY ? 0.0 : std::exp(s[j] - peak);
      total += e;
      weighted += e * v[j];
    }
    const double out = acc * padkern::online_softmax_normaliser(row);
    const double want_out = total > 0 ? weighted / total : 0.0;
    const double want_lse = total > 0 ? peak + std::log(total) : -INFINITY;
    const double lse = padkern::online_softmax_lse(row);
    expect(!std::isnan(out) && std::fabs(out - want_out) <= 1e-12 * (1 + std::fabs(want_out)), "online softmax out",
           out, want_out);
    expect(lse == want_lse || std::fabs(lse - want_lse) <= 1e-12 * (1 + std::fabs(want_lse)), "online softmax lse",
           lse, want_lse);
  }
}

// d out / d s_j = p_j (v_j - out): with dO = 1, delta = out and dp_j = v_j, which is what
// score_gradient(probability_from_lse(...)) must give; checked by central differences.
void score_gradient_matches_finite_differences(std::mt19937& rng) {
  std::normal_distribution<double> normal(0.0, 1.0);
  const int n = 9;
  std::vector<double> s(n), v(n);
  for (int j = 0; j < n; ++j) s[j] = normal(rng), v[j] = normal(rng);
  auto forward = [&](const std::vector<double>& scores, double* lse) {
    padkern::OnlineSoftmax<double> row = padkern::online_softmax_start<double>();
    double acc = 0;
    for (int j = 0; j < n; ++j) {
      double alpha;
      const double p = padkern::online_softmax_fold(row, scores[j], &alpha);
      acc = acc * alpha + p * v[j];
    }
    *lse = padkern::online_softmax_lse(row);
    return acc * padkern::online_softmax_normaliser(row);
  };
  double lse;
  const double out = forward(s, &lse);
  for (int j = 0; j < n; ++j) {
    const double h = 1e-6;
    std::vector<double> up = s, down = s;
    up[j] += h;
    down[j] -= h;
    double ignored;
    const double numeric = (forward(up, &ignored) - forward(down, &ignored)) / (2 * h);
    const double analytic = padkern::score_gradient(padkern::probability_from_lse(s[j], lse, true), v[j], out);
    expect(std::fabs(numeric - analytic) <= 1e-8, "score gradient", analytic, numeric);
  }
  expect(padkern::probability_from_lse<double>(1.0, -INFINITY, true) == 0.0, "no probability without keys");
  expect(padkern::probability_from_lse(1.0, 0.5, false) == 0.0, "no probability past the mask");
  expect(padkern::score_gradient<double>(0.0, 1.0, NAN) == 0.0, "no gradient past the mask, even in a NaN row");
}

// Causal: query i sees keys 0..i; a tile walks every key any of its rows sees and no key
// beyond; a key tile's first possible query.
void causal_ranges_match_the_mask() {
  for (int64_t kv_length = 0; kv_length < 40; ++kv_length) {
    for (int64_t row = 0; row < 40; ++row) {
      for (int causal = 0; causal < 2; ++causal) {
        int64_t seen = 0;
        for (int64_t j = 0; j < kv_length; ++j) seen += (!causal || j <= row) ? 1 : 0;
        expect(padkern::key_limit(row, kv_length, causal) == seen, "key_limit", padkern::key_limit(row, kv_length, causal),
               seen);
      }
    }
    for (int64_t first = 0; first < 40; first += 16) {
      const int64_t rows = 16;
      int64_t widest = 0;
      for (int64_t r = first; r < first + rows; ++r) widest = std::max(widest, padkern::key_limit(r, kv_length, true));
      expect(padkern::tile_key_limit(first, rows, kv_length, true) == widest, "tile_key_limit", 0, 0);
    }
  }
  for (int64_t first_key = 0; first_key < 50; first_key += 8) {
    // No query before first_key sees any key of the tile, and query first_key sees the first.
    expect(padkern::first_query_seeing(first_key, true) == first_key, "first_query_seeing causal");
    expect(padkern::key_limit(first_key, first_key + 1, true) == first_key + 1, "first query sees the tile");
    expect(padkern::first_query_seeing(first_key, false) == 0, "first_query_seeing");
  }
}

// Every tile of the grid maps to its sequence and index; tiles past the last map nowhere.
void tile_coordinates_cover_every_sequence(std::mt19937& rng) {
  std::uniform_int_distribution<int64_t> length(0, 70);
  for (int trial = 0; trial < 50; ++trial) {
    const int64_t batch = trial % 7, rows = trial % 2 ? 16 : 8;
    std::vector<int64_t> starts(batch + 1, 0), lengths(batch);
    int64_t tokens = 0;
    for (int64_t b = 0; b < batch; ++b) {
      lengths[b] = trial % 5 == 0 ? 0 : length(rng);
      tokens += lengths[b];
      starts[b + 1] = starts[b] + (lengths[b] + rows - 1) / rows;
    }
    const int64_t grid = (tokens + rows - 1) / rows + batch;  // the bindings' bound
    expect(batch == 0 || starts[batch] <= grid, "grid bound covers the tiles", grid, starts[batch]);
    std::vector<int64_t> seen(batch, 0);
    for (int64_t tile = 0; tile < grid; ++tile) {
      const padkern::TileCoordinates c = padkern::tile_coordinates(starts.data(), batch, tile);
      if (batch == 0 || tile >= starts[batch]) {
        expect(c.sequence == -1, "tile past the end", c.sequence, -1);
        continue;
      }
      expect(c.sequence >= 0 && c.sequence < batch && c.index == seen[c.sequence], "tile order", c.index, 0);
      if (c.sequence >= 0 && c.sequence < batch) {
        expect(c.index * rows < lengths[c.sequence], "tile holds a real row", c.index * rows, lengths[c.sequence]);
        ++seen[c.sequence];
      }
    }
    for (int64_t b = 0; b < batch; ++b) expect(seen[b] == (lengths[b] + rows - 1) / rows, "tiles per sequence");
  }
}

void head_element_is_64_bit() {
  // Row 2^27 of [rows, 32 heads, 128]: the element index passes 2^39.
  const int64_t row = int64_t{1} << 27;
  expect(padkern::head_element(row, 32, 5, 128, 7) == (row * 32 + 5) * 128 + 7, "head_element 64-bit");
}

}  // namespace

int main() {
  std::mt19937 rng(12345);
  online_softmax_matches_two_passes(rng);
  score_gradient_matches_finite_differences(rng);
  causal_ranges_match_the_mask();
  tile_coordinates_cover_every_sequence(rng);
  head_element_is_64_bit();
  if (failures) std::fprintf(stderr, "%d failures\n", failures);
  return failures ? 1 : 0;
}
