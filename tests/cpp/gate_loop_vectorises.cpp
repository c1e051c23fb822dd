// The CPU recurrences' gate loops, as csrc/cpu/{lstm,gru,rnn}.cpp write them over the shared
// cell maths (rnn_cells.h). Compiled with the extension's flags and gcc's vectoriser report:
// every clone of every loop must vectorise. A select on the input in host_exp once kept the
// AVX2 and AVX-512 clones scalar and made the LSTM forward 1.6x slower.
#include <cstdint>

#include "padkern/rnn_cells.h"
#include "padkern/vector_clones.h"

#define CLONES PADKERN_VECTOR_CLONES

using padkern::GruStep;
using padkern::LstmStep;

CLONES void lstm_loop(const float* __restrict x, const float* __restrict p, float* __restrict c, float* __restrict h,
                      int64_t hidden) {
#pragma omp simd
  for (int64_t j = 0; j < hidden; ++j) {  // LOOP lstm
    const LstmStep<float> s = padkern::lstm_forward<float>(x[j] + p[j], x[hidden + j] + p[hidden + j],
                                                          x[2 * hidden + j] + p[2 * hidden + j],
                                                          x[3 * hidden + j] + p[3 * hidden + j], c[j]);
    c[j] = s.c;
    h[j] = s.h;
  }
}

CLONES void gru_loop(const float* __restrict x, const float* __restrict p, float* __restrict h, int64_t hidden) {
#pragma omp simd
  for (int64_t j = 0; j < hidden; ++j) {  // LOOP gru
    const GruStep<float> s = padkern::gru_forward<float>(x[j], x[hidden + j], x[2 * hidden + j], p[j], p[hidden + j],
                                                        p[2 * hidden + j], h[j]);
    h[j] = s.h;
  }
}

CLONES void rnn_loop(const float* __restrict x, const float* __restrict p, float* __restrict h, int64_t hidden) {
#pragma omp simd
  for (int64_t j = 0; j < hidden; ++j) {  // LOOP rnn
    h[j] = padkern::rnn_forward<float>(x[j] + p[j], false);
  }
}
