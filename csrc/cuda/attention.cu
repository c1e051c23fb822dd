// padkern's own CUDA ragged attention: FlashAttention-2's scheme on SIMT cores, for what
// torch's flash kernel does not take (float32, float64, head sizes not a multiple of 8,
// GPUs before sm_80; see attention_bindings.cpp).
//
// One block of 128 threads per (tile of rows, head): forward and dQ tile the queries of one
// sequence, dK/dV its keys. `kLanes` threads share a row, lane l holding features l,
// l + kLanes, ... in registers; dot products end in a shuffle reduction within the lanes.
// The other side's rows (K/V, or Q/dO) are staged through shared memory a tile at a time and
// read by every row of the block. Scores never leave registers: online softmax forward,
// recomputation from the row's lse backward. Accumulation in float32 (float64 for double).
// The per-row maths: padkern/attention_tile.h.
#include <type_traits>

#include "padkern/attention_kernels.h"
#include "padkern/attention_tile.h"
#include "recurrence_launch.cuh"  // to_acc / from_acc, with_element_type

namespace padkern {
namespace cuda {
namespace {

__device__ __forceinline__ int64_t lesser(int64_t a, int64_t b) { return a < b ? a : b; }

template <int kLanes, typename A>
__device__ __forceinline__ A lanes_sum(A value) {
#pragma unroll
  for (int offset = kLanes / 2; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

// A row's features held by this lane (0 past D or for a row outside its sequence).
template <typename T, typename A, int kLanes, int kChunks>
__device__ __forceinline__ void load_row(const void* base, bool valid, int64_t element, int64_t head_dim, int lane,
                                         A (&row)[kChunks]) {
  const T* p = static_cast<const T*>(base) + element;
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int64_t d = lane + c * kLanes;
    row[c] = valid && d < head_dim ? to_acc<A>(p[d]) : A(0);
  }
}

template <typename T, typename A, int kLanes, int kChunks>
__device__ __forceinline__ void store_row(void* base, int64_t element, int64_t head_dim, int lane,
                                          const A (&row)[kChunks], A factor) {
  T* p = static_cast<T*>(base) + element;
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int64_t d = lane + c * kLanes;
    if (d < head_dim) p[d] = from_acc<T>(row[c] * factor);
  }
}

template <typename A, int kLanes, int kChunks, typename T>
__device__ __forceinline__ A lane_dot(const A (&row)[kChunks], const T* staged, int64_t head_dim, int lane) {
  A part = A(0);
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int64_t d = lane + c * kLanes;
    if (d < head_dim) part += row[c] * to_acc<A>(staged[d]);
  }
  return lanes_sum<kLanes>(part);
}

// Rows [first, first + count) of head `head` of a [rows, heads, D] tensor into shared memory.
template <typename T>
__device__ __forceinline__ void stage_rows(T* dst, const void* src, int64_t first, int count, int64_t heads,
                                           int64_t head, int64_t head_dim) {
  const T* s = static_cast<const T*>(src);
  for (int64_t e = threadIdx.x; e < count * head_dim; e += blockDim.x) {
    dst[e] = s[head_element(first + e / head_dim, heads, head, head_dim, e % head_dim)];
  }
}

struct RowTile {
  bool live;            // the block has a tile (false past the last one)
  SequenceSpan rows;    // the tiled side's rows (queries, or keys for dK/dV)
  SequenceSpan others;  // the other side's rows
  int64_t first;        // first row of the tile within its sequence
};

__device__ __forceinline__ RowTile row_tile(const AttentionArgs& args, int rows_per_block, bool tiles_keys) {
  const TileCoordinates tile = tile_coordinates(args.tile_starts, args.batch, blockIdx.x);
  if (tile.sequence < 0) return {false, {0, 0}, {0, 0}, 0};
  const SequenceSpan queries = sequence_span(args.offsets, tile.sequence, args.tokens);
  const SequenceSpan keys = sequence_span(args.kv_offsets, tile.sequence, args.kv_tokens);
  return {true, tiles_keys ? keys : queries, tiles_keys ? queries : keys, tile.index * rows_per_block};
}

template <typename T, typename A, int kLanes, int kChunks>
__global__ void __launch_bounds__(kAttentionThreads) attention_forward_kernel(AttentionArgs args, int staged) {
  constexpr int kRows = kAttentionThreads / kLanes;
  const RowTile tile = row_tile(args, kRows, false);
  if (!tile.live) return;
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  T* k_tile = reinterpret_cast<T*>(shared_bytes);
  T* v_tile = k_tile + staged * args.head_dim;
  const int64_t head = blockIdx.y, kv_head = head / (args.heads / args.kv_heads), dim = args.head_dim;
  const int lane = threadIdx.x % kLanes;
  const int64_t row = tile.first + threadIdx.x / kLanes;
  const bool valid = row < tile.rows.length();
  const int64_t element = head_element(tile.rows.bos + row, args.heads, head, dim, 0);
  A q[kChunks], acc[kChunks];
  load_row<T, A, kLanes, kChunks>(args.q, valid, element, dim, lane, q);
#pragma unroll
  for (int c = 0; c < kChunks; ++c) acc[c] = A(0);
  const A scale = static_cast<A>(args.scale);
  const int64_t limit = valid ? key_limit(row, tile.others.length(), args.causal) : 0;
  const int64_t tile_rows = lesser(kRows, tile.rows.length() - tile.first);
  const int64_t block_keys = tile_key_limit(tile.first, tile_rows, tile.others.length(), args.causal);
  OnlineSoftmax<A> softmax = online_softmax_start<A>();
  for (int64_t k0 = 0; k0 < block_keys; k0 += staged) {
    const int count = static_cast<int>(lesser(staged, block_keys - k0));
    __syncthreads();
    stage_rows(k_tile, args.k, tile.others.bos + k0, count, args.kv_heads, kv_head, dim);
    stage_rows(v_tile, args.v, tile.others.bos + k0, count, args.kv_heads, kv_head, dim);
    __syncthreads();
    for (int j = 0; j < count; ++j) {
      const A s = lane_dot<A, kLanes, kChunks>(q, k_tile + j * dim, dim, lane) * scale;
      if (k0 + j < limit) {
        A alpha;
        const A p = online_softmax_fold(softmax, s, &alpha);
#pragma unroll
        for (int c = 0; c < kChunks; ++c) {
          const int64_t d = lane + c * kLanes;
          acc[c] = acc[c] * alpha + (d < dim ? p * to_acc<A>(v_tile[j * dim + d]) : A(0));
        }
      }
    }
  }
  if (!valid) return;
  store_row<T, A, kLanes, kChunks>(args.out_w, element, dim, lane, acc, online_softmax_normaliser(softmax));
  if (lane == 0) args.lse[(tile.rows.bos + row) * args.heads + head] = static_cast<float>(online_softmax_lse(softmax));
}

// dQ of a query tile. Writes delta = rowsum(dO * O) and the row's lse in the accumulator
// type for the dK/dV pass. float64 recomputes lse from the scores first (a second pass over
// the keys): the op's float32 lse would cost float64 gradients half their digits.
template <typename T, typename A, int kLanes, int kChunks>
__global__ void __launch_bounds__(kAttentionThreads) attention_dq_kernel(AttentionArgs args, int staged, A* lse_acc) {
  constexpr int kRows = kAttentionThreads / kLanes;
  constexpr bool kExactLse = std::is_same<A, double>::value;
  const RowTile tile = row_tile(args, kRows, false);
  if (!tile.live) return;
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  T* k_tile = reinterpret_cast<T*>(shared_bytes);
  T* v_tile = k_tile + staged * args.head_dim;
  const int64_t head = blockIdx.y, kv_head = head / (args.heads / args.kv_heads), dim = args.head_dim;
  const int lane = threadIdx.x % kLanes;
  const int64_t row = tile.first + threadIdx.x / kLanes;
  const bool valid = row < tile.rows.length();
  const int64_t element = head_element(tile.rows.bos + row, args.heads, head, dim, 0);
  const int64_t row_index = (tile.rows.bos + row) * args.heads + head;
  A q[kChunks], grad_out[kChunks], grad_q[kChunks];
  load_row<T, A, kLanes, kChunks>(args.q, valid, element, dim, lane, q);
  load_row<T, A, kLanes, kChunks>(args.grad_out, valid, element, dim, lane, grad_out);
  load_row<T, A, kLanes, kChunks>(args.out, valid, element, dim, lane, grad_q);  // O, until delta is known
  A delta = A(0);
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    delta += grad_out[c] * grad_q[c];
    grad_q[c] = A(0);
  }
  delta = lanes_sum<kLanes>(delta);
  const A scale = static_cast<A>(args.scale);
  const int64_t limit = valid ? key_limit(row, tile.others.length(), args.causal) : 0;
  const int64_t tile_rows = lesser(kRows, tile.rows.length() - tile.first);
  const int64_t block_keys = tile_key_limit(tile.first, tile_rows, tile.others.length(), args.causal);
  A lse = valid ? static_cast<A>(args.lse[row_index]) : A(0);
  if (kExactLse) {
    OnlineSoftmax<A> softmax = online_softmax_start<A>();
    for (int64_t k0 = 0; k0 < block_keys; k0 += staged) {
      const int count = static_cast<int>(lesser(staged, block_keys - k0));
      __syncthreads();
      stage_rows(k_tile, args.k, tile.others.bos + k0, count, args.kv_heads, kv_head, dim);
      __syncthreads();
      for (int j = 0; j < count; ++j) {
        const A s = lane_dot<A, kLanes, kChunks>(q, k_tile + j * dim, dim, lane) * scale;
        A alpha;
        if (k0 + j < limit) online_softmax_fold(softmax, s, &alpha);
      }
    }
    lse = online_softmax_lse(softmax);
  }
  for (int64_t k0 = 0; k0 < block_keys; k0 += staged) {
    const int count = static_cast<int>(lesser(staged, block_keys - k0));
    __syncthreads();
    stage_rows(k_tile, args.k, tile.others.bos + k0, count, args.kv_heads, kv_head, dim);
    stage_rows(v_tile, args.v, tile.others.bos + k0, count, args.kv_heads, kv_head, dim);
    __syncthreads();
    for (int j = 0; j < count; ++j) {
      const A s = lane_dot<A, kLanes, kChunks>(q, k_tile + j * dim, dim, lane) * scale;
      const A dp = lane_dot<A, kLanes, kChunks>(grad_out, v_tile + j * dim, dim, lane);
      const A ds = score_gradient(probability_from_lse(s, lse, k0 + j < limit), dp, delta);
#pragma unroll
      for (int c = 0; c < kChunks; ++c) {
        const int64_t d = lane + c * kLanes;
        if (d < dim) grad_q[c] += ds * to_acc<A>(k_tile[j * dim + d]);
      }
    }
  }
  if (!valid) return;
  store_row<T, A, kLanes, kChunks>(args.grad_q, element, dim, lane, grad_q, scale);
  if (lane == 0) {
    static_cast<A*>(args.delta)[row_index] = delta;
    lse_acc[row_index] = lse;
  }
}

// dK and dV of a key tile, summed over the query heads that read its kv head.
template <typename T, typename A, int kLanes, int kChunks>
__global__ void __launch_bounds__(kAttentionThreads) attention_dkv_kernel(AttentionArgs args, int staged,
                                                                          const A* lse_acc) {
  constexpr int kRows = kAttentionThreads / kLanes;
  const RowTile tile = row_tile(args, kRows, true);
  if (!tile.live) return;
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  A* lse_tile = reinterpret_cast<A*>(shared_bytes);
  A* delta_tile = lse_tile + staged;
  T* q_tile = reinterpret_cast<T*>(delta_tile + staged);
  T* do_tile = q_tile + staged * args.head_dim;
  const int64_t kv_head = blockIdx.y, group = args.heads / args.kv_heads, dim = args.head_dim;
  const int lane = threadIdx.x % kLanes;
  const int64_t key = tile.first + threadIdx.x / kLanes;
  const bool valid = key < tile.rows.length();
  const int64_t element = head_element(tile.rows.bos + key, args.kv_heads, kv_head, dim, 0);
  A k[kChunks], v[kChunks], grad_k[kChunks], grad_v[kChunks];
  load_row<T, A, kLanes, kChunks>(args.k, valid, element, dim, lane, k);
  load_row<T, A, kLanes, kChunks>(args.v, valid, element, dim, lane, v);
#pragma unroll
  for (int c = 0; c < kChunks; ++c) grad_k[c] = grad_v[c] = A(0);
  const A scale = static_cast<A>(args.scale);
  const A* delta = static_cast<const A*>(args.delta);
  const int64_t start = first_query_seeing(tile.first, args.causal);
  for (int64_t g = 0; g < group; ++g) {
    const int64_t head = kv_head * group + g;
    for (int64_t q0 = start; q0 < tile.others.length(); q0 += staged) {
      const int count = static_cast<int>(lesser(staged, tile.others.length() - q0));
      __syncthreads();
      stage_rows(q_tile, args.q, tile.others.bos + q0, count, args.heads, head, dim);
      stage_rows(do_tile, args.grad_out, tile.others.bos + q0, count, args.heads, head, dim);
      for (int i = threadIdx.x; i < count; i += blockDim.x) {
        lse_tile[i] = lse_acc[(tile.others.bos + q0 + i) * args.heads + head];
        delta_tile[i] = delta[(tile.others.bos + q0 + i) * args.heads + head];
      }
      __syncthreads();
      for (int i = 0; i < count; ++i) {
        const A s = lane_dot<A, kLanes, kChunks>(k, q_tile + i * dim, dim, lane) * scale;
        const A dp = lane_dot<A, kLanes, kChunks>(v, do_tile + i * dim, dim, lane);
        const bool visible = valid && (!args.causal || key <= q0 + i);
        const A p = probability_from_lse(s, lse_tile[i], visible);
        const A ds = score_gradient(p, dp, delta_tile[i]);
#pragma unroll
        for (int c = 0; c < kChunks; ++c) {
          const int64_t d = lane + c * kLanes;
          if (d < dim) {
            grad_v[c] += p * to_acc<A>(do_tile[i * dim + d]);
            grad_k[c] += ds * to_acc<A>(q_tile[i * dim + d]);
          }
        }
      }
    }
  }
  if (!valid) return;
  store_row<T, A, kLanes, kChunks>(args.grad_k, element, dim, lane, grad_k, scale);
  store_row<T, A, kLanes, kChunks>(args.grad_v, element, dim, lane, grad_v, A(1));
}

dim3 attention_grid(const AttentionArgs& args, int64_t heads) {
  return dim3(static_cast<unsigned>(args.tiles), static_cast<unsigned>(heads));
}

// Calls launch(kLanes, kChunks) for the head size: D <= 128, <= 256. (An 8 x 8 layout for
// D <= 64 made ptxas spill a few bytes on sm_90 at 56-80 registers; 8 x 16 does not.)
template <typename Launch>
cudaError_t with_head_layout(int64_t head_dim, Launch&& launch) {
  if (head_dim <= 128) return launch(std::integral_constant<int, 8>{}, std::integral_constant<int, 16>{});
  return launch(std::integral_constant<int, 16>{}, std::integral_constant<int, 16>{});
}

template <typename T, typename A>
cudaError_t forward(const AttentionArgs& args, cudaStream_t stream) {
  if (args.tiles == 0 || args.heads == 0) return cudaSuccess;
  const int staged = attention_staged_rows(args.head_dim, sizeof(T));
  const size_t bytes = 2 * static_cast<size_t>(staged) * args.head_dim * sizeof(T);
  return with_head_layout(args.head_dim, [&](auto lanes, auto chunks) {
    attention_forward_kernel<T, A, decltype(lanes)::value, decltype(chunks)::value>
        <<<attention_grid(args, args.heads), kAttentionThreads, bytes, stream>>>(args, staged);
    return cudaGetLastError();
  });
}

template <typename T, typename A>
cudaError_t backward(const AttentionArgs& q_tiles, const AttentionArgs& kv_tiles, cudaStream_t stream) {
  const int staged = attention_staged_rows(q_tiles.head_dim, sizeof(T));
  const size_t rows_bytes = 2 * static_cast<size_t>(staged) * q_tiles.head_dim * sizeof(T);
  // lse in the accumulator type sits after delta in the same buffer ([2, L, Hq]).
  A* lse_acc = static_cast<A*>(q_tiles.delta) + q_tiles.tokens * q_tiles.heads;
  return with_head_layout(q_tiles.head_dim, [&](auto lanes, auto chunks) {
    constexpr int kLanes = decltype(lanes)::value, kChunks = decltype(chunks)::value;
    if (q_tiles.tiles > 0 && q_tiles.heads > 0) {
      attention_dq_kernel<T, A, kLanes, kChunks>
          <<<attention_grid(q_tiles, q_tiles.heads), kAttentionThreads, rows_bytes, stream>>>(q_tiles, staged, lse_acc);
      const cudaError_t err = cudaGetLastError();
      if (err != cudaSuccess) return err;
    }
    if (kv_tiles.tiles > 0 && kv_tiles.kv_heads > 0) {
      attention_dkv_kernel<T, A, kLanes, kChunks>
          <<<attention_grid(kv_tiles, kv_tiles.kv_heads), kAttentionThreads, rows_bytes + 2 * staged * sizeof(A),
             stream>>>(kv_tiles, staged, lse_acc);
    }
    return cudaGetLastError();
  });
}

}  // namespace

cudaError_t launch_attention_forward(ElementType type, const AttentionArgs& args, cudaStream_t stream) {
  return with_element_type(type, [&](auto storage, auto accumulate) {
    return forward<decltype(storage), decltype(accumulate)>(args, stream);
  });
}

cudaError_t launch_attention_backward(ElementType type, const AttentionArgs& q_tiles, const AttentionArgs& kv_tiles,
                                      cudaStream_t stream) {
  return with_element_type(type, [&](auto storage, auto accumulate) {
    return backward<decltype(storage), decltype(accumulate)>(q_tiles, kv_tiles, stream);
  });
}

}  // namespace cuda
}  // namespace padkern
