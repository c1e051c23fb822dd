// CUDA kernels of padkern::pad and padkern::unpad: row copies in the widest word
// (16 down to 1 bytes) that the row size, the strides and the pointers allow, so
// one kernel serves every dtype at close to memory bandwidth.
#include <cuda_runtime.h>

#include <cstring>

#include "padkern/cuda_check.h"
#include "padkern/padding_kernels.h"

namespace padkern {
namespace cuda {
namespace {

template <typename Word>
__global__ void pad_kernel(PaddingLayout layout, const unsigned char* __restrict__ values,
                           unsigned char* __restrict__ padded, Word fill, int64_t total_words) {
  const int64_t words_per_row = layout.row_bytes / static_cast<int64_t>(sizeof(Word));
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total_words; i += stride) {
    const int64_t row = i / words_per_row;
    const int64_t word = i - row * words_per_row;
    const int64_t b = row / layout.padded_length;
    const int64_t t = row - b * layout.padded_length;
    const SequenceSpan span = sequence_span(layout.offsets, b, layout.tokens);
    Word* dst = reinterpret_cast<Word*>(padded + padded_row_offset(layout, b, t)) + word;
    if (t < span.length()) {
      *dst = reinterpret_cast<const Word*>(values + (span.bos + t) * layout.values_row_stride)[word];
    } else {
      *dst = fill;
    }
  }
}

// Walks the L real tokens only: the padded rows are never read. A token past its
// sequence's padded length (possible only with invalid offsets, unchecked on a GPU outside
// debug mode) is written as zeros instead of read from outside the padded tensor.
template <typename Word>
__global__ void unpad_kernel(PaddingLayout layout, const unsigned char* __restrict__ padded,
                             unsigned char* __restrict__ values, int64_t total_words) {
  const int64_t words_per_row = layout.row_bytes / static_cast<int64_t>(sizeof(Word));
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total_words; i += stride) {
    const int64_t token = i / words_per_row;
    const int64_t word = i - token * words_per_row;
    const int64_t b = sequence_of_token(layout.offsets, layout.batch, token);
    const int64_t t = token - layout.offsets[b];
    const bool inside = t >= 0 && t < padded_length_of(layout.offsets, b, layout.padded_length);
    reinterpret_cast<Word*>(values + token * layout.values_row_stride)[word] =
        inside ? reinterpret_cast<const Word*>(padded + padded_row_offset(layout, b, t))[word] : Word{};
  }
}

struct alignas(16) Word16 {
  uint4 bits;
};

// The widest power-of-two word (<= 16 bytes) dividing every byte quantity given.
int widest_word(std::initializer_list<int64_t> quantities) {
  int word = 16;
  for (int64_t q : quantities) {
    while (word > 1 && q % word != 0) word /= 2;
  }
  return word;
}

template <typename Word>
Word repeat_fill(const void* element_bytes, int element_size) {
  unsigned char bytes[sizeof(Word)];
  for (int i = 0; i < static_cast<int>(sizeof(Word)); i += element_size) std::memcpy(bytes + i, element_bytes, element_size);
  Word word;
  std::memcpy(&word, bytes, sizeof(Word));
  return word;
}

template <typename Word>
cudaError_t launch_pad_words(const PaddingLayout& layout, const void* values, void* padded, const void* fill_element,
                             int element_size, cudaStream_t stream) {
  const int64_t total_words = layout.batch * layout.padded_length * (layout.row_bytes / static_cast<int64_t>(sizeof(Word)));
  if (total_words == 0) return cudaSuccess;
  pad_kernel<Word><<<blocks_for(total_words), kThreadsPerBlock, 0, stream>>>(
      layout, static_cast<const unsigned char*>(values), static_cast<unsigned char*>(padded),
      repeat_fill<Word>(fill_element, element_size), total_words);
  return cudaGetLastError();
}

template <typename Word>
cudaError_t launch_unpad_words(const PaddingLayout& layout, const void* padded, void* values, int64_t total_tokens,
                               cudaStream_t stream) {
  const int64_t total_words = total_tokens * (layout.row_bytes / static_cast<int64_t>(sizeof(Word)));
  if (total_words == 0) return cudaSuccess;
  unpad_kernel<Word><<<blocks_for(total_words), kThreadsPerBlock, 0, stream>>>(
      layout, static_cast<const unsigned char*>(padded), static_cast<unsigned char*>(values), total_words);
  return cudaGetLastError();
}

int layout_word(const PaddingLayout& layout, const void* values, const void* padded) {
  return widest_word({layout.row_bytes, layout.values_row_stride, layout.padded_batch_stride, layout.padded_time_stride,
                      static_cast<int64_t>(reinterpret_cast<uintptr_t>(values)),
                      static_cast<int64_t>(reinterpret_cast<uintptr_t>(padded))});
}

}  // namespace

cudaError_t launch_pad(const PaddingLayout& layout, const void* values, void* padded, const void* fill_element,
                       int element_size, cudaStream_t stream) {
  switch (layout_word(layout, values, padded)) {
    case 16: return launch_pad_words<Word16>(layout, values, padded, fill_element, element_size, stream);
    case 8: return launch_pad_words<uint64_t>(layout, values, padded, fill_element, element_size, stream);
    case 4: return launch_pad_words<uint32_t>(layout, values, padded, fill_element, element_size, stream);
    case 2: return launch_pad_words<uint16_t>(layout, values, padded, fill_element, element_size, stream);
    default: return launch_pad_words<uint8_t>(layout, values, padded, fill_element, element_size, stream);
  }
}

cudaError_t launch_unpad(const PaddingLayout& layout, const void* padded, void* values, int64_t total_tokens,
                         cudaStream_t stream) {
  switch (layout_word(layout, values, padded)) {
    case 16: return launch_unpad_words<Word16>(layout, padded, values, total_tokens, stream);
    case 8: return launch_unpad_words<uint64_t>(layout, padded, values, total_tokens, stream);
    case 4: return launch_unpad_words<uint32_t>(layout, padded, values, total_tokens, stream);
    case 2: return launch_unpad_words<uint16_t>(layout, padded, values, total_tokens, stream);
    default: return launch_unpad_words<uint8_t>(layout, padded, values, total_tokens, stream);
  }
}

}  // namespace cuda
}  // namespace padkern
