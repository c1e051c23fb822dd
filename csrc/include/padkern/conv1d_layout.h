// Index maths of the ragged 1-D convolution, shared by the CPU and CUDA kernels (and
// checked on the CPU by tests/cpp/conv1d_layout_test.cpp).
//
// Output token t of a sequence [bos, eos) reads, through tap j < k, the token
// t + shift_j of the same sequence, shift_j = j * dilation - left_pad, and zero where
// that falls outside [bos, eos): each sequence is zero-padded at its own edges and never
// reads a neighbour. The input-gradient pass is the same walk with the taps mirrored
// (shift -shift_j): grad_x[s] collects grad_out[t] from every t with t + shift_j = s.
#pragma once
#include <cstdint>

#include "padkern/ragged_layout.h"

namespace padkern {

// Tap j shifts by first_shift + j * step rows; count = k taps.
struct ConvTaps {
  int64_t first_shift;
  int64_t step;
  int64_t count;
};

// The forward taps: -left_pad, -left_pad + dilation, ...
PADKERN_HOST_DEVICE ConvTaps forward_taps(int64_t kernel_size, int64_t left_pad, int64_t dilation) {
  return {-left_pad, dilation, kernel_size};
}

// The input-gradient taps: the forward ones mirrored, tap j still pairs with weight tap j.
PADKERN_HOST_DEVICE ConvTaps mirrored_taps(int64_t kernel_size, int64_t left_pad, int64_t dilation) {
  return {left_pad, -dilation, kernel_size};
}

PADKERN_HOST_DEVICE int64_t tap_shift(const ConvTaps& taps, int64_t j) { return taps.first_shift + j * taps.step; }

// The row token `token` reads through a tap of `shift`, or -1 when it lies outside the
// token's sequence [span.bos, span.eos) (so, for clamped spans, never outside the tensor).
PADKERN_HOST_DEVICE int64_t tap_source(int64_t token, int64_t shift, const SequenceSpan& span) {
  const int64_t source = token + shift;
  return (source >= span.bos && source < span.eos) ? source : -1;
}

// The span of the sequence holding `token` (batch >= 1), clamped into [0, rows): with
// offsets that break the contract (unchecked on a GPU) the token may lie outside it, and
// then tap_source still never leaves the tensor.
PADKERN_HOST_DEVICE SequenceSpan token_span(const int64_t* offsets, int64_t batch, int64_t rows, int64_t token) {
  return sequence_span(offsets, sequence_of_token(offsets, batch, token), rows);
}

}  // namespace padkern
