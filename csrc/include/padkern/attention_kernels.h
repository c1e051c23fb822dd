// Host entry points of padkern's own CUDA ragged attention (csrc/cuda/attention.cu). Raw
// device pointers; every tensor row-major: q, out, grad_out, grad_q [L, Hq, D]; k, v, grad_k,
// grad_v [Lk, Hkv, D]; lse, delta [L, Hq] (accumulator type: float, double for double).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "padkern/rnn_kernels.h"  // ElementType

namespace padkern {
namespace cuda {

// Rows (queries, or keys for dK/dV) per block: 128 threads, `lanes` per row.
constexpr int kAttentionThreads = 128;
// Head sizes the kernels are compiled for: D <= 256.
constexpr int64_t kAttentionMaxHeadDim = 256;

// Rows per block for head size D: 8 lanes per row up to D = 128, 16 past it.
inline int attention_rows_per_block(int64_t head_dim) { return kAttentionThreads / (head_dim <= 128 ? 8 : 16); }

// Rows of K/V (or Q/dO) a block stages in shared memory at a time: two [rows, D] tiles of
// `element_size` bytes within 32 KiB (static limit 48 KiB, with room for lse and delta).
inline int attention_staged_rows(int64_t head_dim, int64_t element_size) {
  const int64_t rows = 32768 / (2 * head_dim * element_size);
  return static_cast<int>(rows < 1 ? 1 : (rows > 32 ? 32 : rows));
}

struct AttentionArgs {
  const void *q, *k, *v, *out, *grad_out;
  const int64_t *offsets, *kv_offsets;  // [B+1] each
  const int64_t* tile_starts;           // [B+1] prefix of per-sequence tile counts (query or key tiles)
  void *out_w, *grad_q, *grad_k, *grad_v;
  float* lse;          // [L, Hq] float32 (the op's output)
  void* delta;         // [L, Hq] accumulator type (backward)
  int64_t tokens, kv_tokens, batch, heads, kv_heads, head_dim;
  int64_t tiles;       // grid size along x: an upper bound of the tiles, known without the offsets
  double scale;
  bool causal;
};

cudaError_t launch_attention_forward(ElementType type, const AttentionArgs& args, cudaStream_t stream);
// dQ and delta; then dK and dV (which read delta).
cudaError_t launch_attention_backward(ElementType type, const AttentionArgs& q_tiles, const AttentionArgs& kv_tiles,
                                      cudaStream_t stream);

}  // namespace cuda
}  // namespace padkern
