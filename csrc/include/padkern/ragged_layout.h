// Index arithmetic on ragged buffers shared by the CPU and CUDA kernels.
//
// Byte-level layout of a pad/unpad: both are row copies between a ragged buffer
// values [L, D] and a padded buffer [B, T, D] (or [T, B, D], expressed through
// the strides), so one dtype-agnostic description serves the CPU and CUDA kernels.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define PADKERN_HOST_DEVICE __host__ __device__ __forceinline__
#else
// Forced inline so the CPU gate loops see straight-line code and vectorise.
#define PADKERN_HOST_DEVICE inline __attribute__((always_inline))
#endif

namespace padkern {

struct PaddingLayout {
  const int64_t* offsets;  // [B+1]; contents unchecked on a GPU outside debug mode (see sequence_span)
  int64_t batch;           // B
  int64_t tokens;          // L: rows of values
  int64_t padded_length;   // T
  int64_t row_bytes;       // D * element size
  int64_t values_row_stride;     // bytes between consecutive tokens of values
  int64_t padded_batch_stride;   // bytes between sequences of the padded buffer
  int64_t padded_time_stride;    // bytes between time steps of the padded buffer
};

// Row r of the padded buffer enumerates (b, t) batch-major: b = r / T, t = r % T.
PADKERN_HOST_DEVICE int64_t padded_row_offset(const PaddingLayout& layout, int64_t b, int64_t t) {
  return b * layout.padded_batch_stride + t * layout.padded_time_stride;
}

}  // namespace padkern

namespace padkern {

// The sequence holding token `token`: the largest b with offsets[b] <= token. Zero-length
// sequences share their offset with the next sequence and are skipped by taking the largest.
PADKERN_HOST_DEVICE int64_t sequence_of_token(const int64_t* offsets, int64_t batch, int64_t token) {
  int64_t low = 0, high = batch - 1;
  while (low < high) {
    const int64_t mid = (low + high + 1) / 2;
    if (offsets[mid] <= token) {
      low = mid;
    } else {
      high = mid - 1;
    }
  }
  return low;
}

// Sequence b's rows [bos, eos), clamped into [0, rows). On a GPU the offsets' contents
// are checked only in debug mode (a check costs a device-to-host copy per call), so every
// CUDA kernel reads sequence bounds through this: whatever the offsets hold, it stays
// inside its tensors. Valid offsets pass unchanged. For a padded tensor, rows = T bounds
// the length instead: use padded_length_of. Rows no valid span covers are left unwritten:
// invalid offsets give undefined values, never an access outside a tensor.
struct SequenceSpan {
  int64_t bos, eos;
  PADKERN_HOST_DEVICE int64_t length() const { return eos - bos; }
};

PADKERN_HOST_DEVICE int64_t clamp_index(int64_t value, int64_t low, int64_t high) {
  return value < low ? low : (value > high ? high : value);
}

PADKERN_HOST_DEVICE SequenceSpan sequence_span(const int64_t* offsets, int64_t b, int64_t rows) {
  const int64_t bos = clamp_index(offsets[b], 0, rows);
  return {bos, clamp_index(offsets[b + 1], bos, rows)};
}

// Sequence b's length within a padded tensor of T steps: offsets' difference clamped to [0, T].
PADKERN_HOST_DEVICE int64_t padded_length_of(const int64_t* offsets, int64_t b, int64_t padded_length) {
  return clamp_index(offsets[b + 1] - offsets[b], 0, padded_length);
}

// Token of step t (0-based) of a sequence occupying [bos, eos): forward runs bos, bos+1,
// ...; reverse runs each sequence from its own last token (eos-1) back to bos.
PADKERN_HOST_DEVICE int64_t step_token(int64_t bos, int64_t eos, int64_t t, bool reverse) {
  return reverse ? eos - 1 - t : bos + t;
}

}  // namespace padkern
