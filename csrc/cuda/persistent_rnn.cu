// Persistent, weight-stationary forward recurrences (LSTM, GRU) on tensor cores.
//
// One cooperative launch runs every step of a layer. Block j owns hidden units
// [j*U, (j+1)*U) of every gate: it copies those G*U rows of w_hh into shared memory once
// and keeps them for all steps. Each step, for every tile of 128 running sequences, the
// block multiplies their previous hidden states (read K-slice by K-slice through a
// 3-stage cp.async ring, from a global buffer every block writes its units into) by its
// resident rows with ldmatrix + mma.sync (mma_pipeline.cuh, layout mma_tile_layout.h),
// applies the cell maths (rnn_cells.h) straight from the accumulators, and writes its
// units of the new hidden state; a grid-wide barrier separates the steps.
//
// Variable length without a host synchronisation: the sequences are sorted longest
// first on the device before the launch, so those running at step t are a prefix whose
// size every block computes (running_count); each reads its input gates at its own
// token (its own last token first when reversed) and writes its outputs in place.
// Nothing is copied into a packed layout. The forward saves what the per-sequence
// backward kernels read, so backward runs those unchanged.
//
// Only the barrier, the copies and the MMA instructions are GPU-only; the index maths is
// in persistent_rnn_plan.h and mma_tile_layout.h, tested on the CPU.
#include <cooperative_groups.h>

#include "mma_pipeline.cuh"
#include "padkern/persistent_rnn_plan.h"
#include "padkern/rnn_cells.h"
#include "padkern/rnn_kernels.h"

namespace padkern {
namespace cuda {
namespace {

using persistent::kThreads;
using persistent::kTileRows;
static_assert(persistent::kRingStages == kMmaStages && persistent::kRowBytes == mma::kRowBytes &&
                  persistent::kThreads == kMmaThreads,
              "persistent_rnn_plan.h sizes what mma_pipeline.cuh runs");

// Running sequences x this block's columns for one tile: acc[n8 block][4] per lane, each
// warp 16 rows (its slab of the tile) x all G*U columns.
template <typename T, int Gates, int Units>
struct StepTile {
  static constexpr int kCols = Gates * Units;
  static constexpr int kFrags = kCols / 8;
  static constexpr int kSliceElements = mma::kRowBytes / static_cast<int>(sizeof(T));
  static_assert(kCols % 16 == 0 && Units % 8 == 0, "columns in pairs of n8 blocks, units in blocks of 8");
};

// acc = h_prev[rows m0.., :] @ w_rows^T for one tile of running sequences. `ring` holds
// kRingStages x 128 rows x 64 bytes; `weights` the block's rows, K-slice after K-slice.
template <typename T, int Gates, int Units>
__device__ __forceinline__ void step_tile_gemm(const MmaOperand<T>& h_prev, int64_t hidden,
                                               const unsigned char* weights, unsigned char* ring,
                                               float (&acc)[StepTile<T, Gates, Units>::kFrags][4]) {
  using Tile = StepTile<T, Gates, Units>;
  constexpr int kRingBytes = kTileRows * mma::kRowBytes;
  constexpr int kWeightSliceBytes = Tile::kCols * mma::kRowBytes;
  const int64_t slices = hidden / Tile::kSliceElements;  // whole slices: units_fit
  const int lane = threadIdx.x % 32, warp_row = (threadIdx.x / 32) * 16;
#pragma unroll
  for (int j = 0; j < Tile::kFrags; ++j)
#pragma unroll
    for (int r = 0; r < 4; ++r) acc[j][r] = 0.0f;
  SliceCopy<T, kTileRows> copy;
  for (int s = 0; s < kMmaStages - 1; ++s) {
    if (s < slices) copy.issue(h_prev, hidden, s * Tile::kSliceElements, ring + s * kRingBytes);
    cp_async_commit();
  }
  int stage = 0, refill = kMmaStages - 1;
  for (int64_t slice = 0; slice < slices; ++slice) {
    cp_async_wait<kMmaStages - 2>();
    __syncthreads();  // slice visible to all; every warp done with the stage refilled below
    if (slice + kMmaStages - 1 < slices) {
      copy.issue(h_prev, hidden, (slice + kMmaStages - 1) * Tile::kSliceElements, ring + refill * kRingBytes);
    }
    cp_async_commit();
    const unsigned char* a_tile = ring + stage * kRingBytes;
    const unsigned char* b_tile = weights + slice * kWeightSliceBytes;
    // A warp whose 16 rows are all past the running sequences has nothing to multiply
    // (warp-uniform; the barriers stay outside).
    if (warp_row < h_prev.rows) {
#pragma unroll
      for (int step = 0; step < mma::kStepsPerStage; ++step) {
        uint32_t a_frag[4], b_frag[Tile::kFrags / 2][4];
        const mma::RowChunk a_src = mma::a_fragment_source(lane, warp_row, step);
        ldmatrix_x4(a_frag, a_tile + mma::chunk_offset(a_src.row, a_src.chunk));
        round_to_tf32_if_float<T>(a_frag);
#pragma unroll
        for (int j = 0; j < Tile::kFrags / 2; ++j) {
          const mma::RowChunk b_src = mma::b_fragment_source(lane, 16 * j, step);
          ldmatrix_x4(b_frag[j], b_tile + mma::chunk_offset(b_src.row, b_src.chunk));
          round_to_tf32_if_float<T>(b_frag[j]);
        }
#pragma unroll
        for (int j = 0; j < Tile::kFrags; ++j) {
          mma_step<T>(acc[j], a_frag, b_frag[j / 2][2 * (j % 2)], b_frag[j / 2][2 * (j % 2) + 1]);
        }
      }
    }
    stage = stage + 1 == kMmaStages ? 0 : stage + 1;
    refill = refill + 1 == kMmaStages ? 0 : refill + 1;
  }
  cp_async_wait<0>();
  __syncthreads();  // the next tile's copies may overwrite any stage
}

// Copies the block's rows of w_hh (gate q, unit u -> row q*U + u of the tile) into
// shared memory, K-slice after K-slice in the swizzled layout.
template <typename T, int Gates, int Units>
__device__ __forceinline__ void load_weights(const T* w_hh, int64_t hidden, int64_t first_unit,
                                             unsigned char* weights) {
  using Tile = StepTile<T, Gates, Units>;
  constexpr int kChunkElements = mma::kChunkBytes / static_cast<int>(sizeof(T));
  const int64_t chunks_per_row = hidden / kChunkElements;
  for (int64_t i = threadIdx.x; i < Tile::kCols * chunks_per_row; i += kThreads) {
    const int row = static_cast<int>(i / chunks_per_row);
    const int64_t chunk = i % chunks_per_row;
    const int64_t source_row = (row / Units) * hidden + first_unit + row % Units;
    unsigned char* dst = weights + (chunk / mma::kChunksPerRow) * (Tile::kCols * mma::kRowBytes) +
                         mma::chunk_offset(row, static_cast<int>(chunk % mma::kChunksPerRow));
    cp_async_16(dst, w_hh + source_row * hidden + chunk * kChunkElements, mma::kChunkBytes);
  }
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
}

// Where one running sequence (sorted position k) is at step t.
struct RunningRow {
  int64_t sequence, token;
  bool last_step;
};

__device__ __forceinline__ RunningRow running_row(const PersistentRnnArgs& args, int64_t k, int64_t t) {
  const int64_t b = args.order[k];
  const SequenceSpan span = sequence_span(args.offsets, b, args.tokens);
  return {b, step_token(span.bos, span.eos, t, args.reverse), t == span.length() - 1};
}

// The cells' updates of one unit of one running sequence, from the block's recurrent
// products hh[q] (gate q, no bias). Each writes the new h (the ring copy the next MMA
// reads, and the output row), what backward reads, and h_n (c_n) at the sequence's
// last step; `state` is the float32 c (LSTM) or h (GRU) of this unit.
template <typename T>
struct LstmUnit {
  static constexpr int kGates = 4;
  __device__ static void update(const PersistentRnnArgs& args, const RunningRow& row, int64_t col,
                                const float (&hh)[kGates], float* state, T* h_ring) {
    const int64_t hidden = args.hidden;
    const T* x = static_cast<const T*>(args.gates_x) + row.token * 4 * hidden + col;  // both biases included
    const LstmStep<float> s = lstm_forward<float>(to_acc<float>(x[0]) + hh[0], to_acc<float>(x[hidden]) + hh[1],
                                                  to_acc<float>(x[2 * hidden]) + hh[2],
                                                  to_acc<float>(x[3 * hidden]) + hh[3], *state);
    *state = s.c;
    *h_ring = from_acc<T>(s.h);
    static_cast<T*>(args.output)[row.token * hidden + col] = from_acc<T>(s.h);
    if (args.saved_gates != nullptr) {
      T* g = static_cast<T*>(args.saved_gates) + row.token * 4 * hidden + col;
      g[0] = from_acc<T>(s.gates.i);
      g[hidden] = from_acc<T>(s.gates.f);
      g[2 * hidden] = from_acc<T>(s.gates.g);
      g[3 * hidden] = from_acc<T>(s.gates.o);
      static_cast<T*>(args.saved_extra)[row.token * hidden + col] = from_acc<T>(s.c);
    }
    if (row.last_step) {
      static_cast<T*>(args.h_n)[row.sequence * hidden + col] = from_acc<T>(s.h);
      static_cast<T*>(args.c_n)[row.sequence * hidden + col] = from_acc<T>(s.c);
    }
  }
};

template <typename T>
struct GruUnit {
  static constexpr int kGates = 3;
  __device__ static void update(const PersistentRnnArgs& args, const RunningRow& row, int64_t col,
                                const float (&hh)[kGates], float* state, T* h_ring) {
    const int64_t hidden = args.hidden;
    const T* x = static_cast<const T*>(args.gates_x) + row.token * 3 * hidden + col;  // b_ih included
    const T* b_hh = static_cast<const T*>(args.b_hh) + col;
    const float hh_n = hh[2] + to_acc<float>(b_hh[2 * hidden]);
    // The float32 state, not the rounded copy the MMA reads, carries z * h_prev.
    const GruStep<float> s = gru_forward<float>(to_acc<float>(x[0]), to_acc<float>(x[hidden]),
                                                to_acc<float>(x[2 * hidden]), hh[0] + to_acc<float>(b_hh[0]),
                                                hh[1] + to_acc<float>(b_hh[hidden]), hh_n, *state);
    *state = s.h;
    *h_ring = from_acc<T>(s.h);
    static_cast<T*>(args.output)[row.token * hidden + col] = from_acc<T>(s.h);
    if (args.saved_gates != nullptr) {
      T* g = static_cast<T*>(args.saved_gates) + row.token * 3 * hidden + col;
      g[0] = from_acc<T>(s.r);
      g[hidden] = from_acc<T>(s.z);
      g[2 * hidden] = from_acc<T>(s.n);
      static_cast<T*>(args.saved_extra)[row.token * hidden + col] = from_acc<T>(hh_n);
    }
    if (row.last_step) static_cast<T*>(args.h_n)[row.sequence * hidden + col] = from_acc<T>(s.h);
  }
};

// A minimum of 1 block per SM lets ptxas use the registers it needs (aiming at a higher
// occupancy by default, it spilled). The grid is sized to what the device holds anyway.
template <typename T, typename Cell, int Units>
__global__ void __launch_bounds__(kThreads, 1) persistent_forward_kernel(PersistentRnnArgs args) {
  constexpr int kGates = Cell::kGates;
  using Tile = StepTile<T, kGates, Units>;
  extern __shared__ __align__(128) unsigned char shared_raw[];
  unsigned char* weights = shared_raw;
  unsigned char* ring = shared_raw + static_cast<int64_t>(Tile::kCols) * args.hidden * sizeof(T);
  const int64_t hidden = args.hidden, first_unit = int64_t{blockIdx.x} * Units;
  load_weights<T, kGates, Units>(static_cast<const T*>(args.w_hh), hidden, first_unit, weights);
  T* ring_h = static_cast<T*>(args.hidden_ring);
  const int lane = threadIdx.x % 32, warp_row = (threadIdx.x / 32) * 16;
  const int64_t steps = args.batch > 0 ? args.sorted_lengths[0] : 0;
  cooperative_groups::grid_group grid = cooperative_groups::this_grid();
  for (int64_t t = 0; t < steps; ++t) {
    const int64_t running = persistent::running_count(args.sorted_lengths, args.batch, t);
    const T* h_prev = ring_h + (t & 1) * args.batch * hidden;
    T* h_next = ring_h + ((t + 1) & 1) * args.batch * hidden;
    for (int64_t m0 = 0; m0 < running; m0 += kTileRows) {
      float acc[Tile::kFrags][4];
      step_tile_gemm<T, kGates, Units>(MmaOperand<T>{h_prev + m0 * hidden, hidden, 1, running - m0, true}, hidden,
                                       weights, ring, acc);
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int64_t k = m0 + warp_row + lane / 4 + 8 * half;
        if (k >= running) continue;
        const RunningRow row = running_row(args, k, t);
#pragma unroll
        for (int unit_block = 0; unit_block < Units / 8; ++unit_block)
#pragma unroll
          for (int parity = 0; parity < 2; ++parity) {
            const int64_t col = first_unit + persistent::lane_unit(lane, unit_block, parity);
            float hh[kGates];
#pragma unroll
            for (int q = 0; q < kGates; ++q) hh[q] = acc[persistent::gate_fragment(q, unit_block, Units)][2 * half + parity];
            Cell::update(args, row, col, hh, args.state + k * hidden + col, h_next + k * hidden + col);
          }
      }
    }
    if (t + 1 < steps) grid.sync();  // every block's units of h_t written before any block reads them
  }
}

// The kernel for `units` (a template parameter), or null for a count it has no kernel for.
template <typename T>
void* persistent_kernel(int gates, int units) {
  // The unit counts a device can choose (persistent_rnn_units: the fewest that fit). On an
  // H100 an LSTM takes 8 up to H = 1408 (half types) and 16 up to 1600; a GRU takes 16.
  // Larger counts need more shared memory per block than a grid of fewer blocks saves.
  if (gates == 4) {
    switch (units) {
      case 8: return reinterpret_cast<void*>(persistent_forward_kernel<T, LstmUnit<T>, 8>);
      case 16: return reinterpret_cast<void*>(persistent_forward_kernel<T, LstmUnit<T>, 16>);
    }
  } else if (units == 16) {
    return reinterpret_cast<void*>(persistent_forward_kernel<T, GruUnit<T>, 16>);
  }
  return nullptr;
}

// Tensor-core element types only: double and exact float32 run the per-sequence kernels.
template <typename Launch>
cudaError_t with_tensor_core_type(ElementType type, Launch&& launch) {
  switch (type) {
    case ElementType::Float16: return launch(__half{});
    case ElementType::BFloat16: return launch(__nv_bfloat16{});
    case ElementType::Float32: return launch(float{});  // the caller checked that TF32 is allowed
    default: return cudaErrorNotSupported;
  }
}

// Whether `units` per block gives a co-resident grid on the current device; sets the
// kernel's dynamic shared memory allowance as a side effect.
template <typename T>
cudaError_t co_resident(int gates, int64_t hidden, int units, bool* fits) {
  *fits = false;
  int device = 0, shared_limit = 0, sm_count = 0, cooperative = 0, per_sm = 0;
  cudaError_t err;
  if ((err = cudaGetDevice(&device)) != cudaSuccess) return err;
  if ((err = cudaDeviceGetAttribute(&shared_limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device)) != cudaSuccess ||
      (err = cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device)) != cudaSuccess ||
      (err = cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device)) != cudaSuccess) {
    return err;
  }
  void* kernel = persistent_kernel<T>(gates, units);
  if (!cooperative || kernel == nullptr || !persistent::units_fit(hidden, gates, units, sizeof(T), shared_limit)) {
    return cudaSuccess;
  }
  const int bytes = static_cast<int>(persistent::shared_bytes(hidden, gates, units, sizeof(T)));
  // The allowance is the device's maximum, not this call's need: another thread launching
  // the same kernel for another H can then never lower it under this one.
  if ((err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, shared_limit)) != cudaSuccess ||
      (err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, bytes)) != cudaSuccess) {
    return err;
  }
  *fits = hidden / units <= static_cast<int64_t>(per_sm) * sm_count;
  return cudaSuccess;
}

template <typename T>
cudaError_t launch_persistent(int gates, const PersistentRnnArgs& args, cudaStream_t stream) {
  if (args.batch == 0 || args.hidden == 0) return cudaSuccess;
  // 16-byte cp.async copies; aligned_weights guarantees it, so this is a caller's bug.
  if (reinterpret_cast<uintptr_t>(args.w_hh) % 16 != 0) return cudaErrorInvalidValue;
  bool fits = false;
  cudaError_t err = co_resident<T>(gates, args.hidden, args.units, &fits);
  if (err != cudaSuccess) return err;
  if (!fits) return cudaErrorNotSupported;
  const size_t bytes = static_cast<size_t>(persistent::shared_bytes(args.hidden, gates, args.units, sizeof(T)));
  PersistentRnnArgs copy = args;
  void* params[] = {&copy};
  // A cooperative launch fails (cudaErrorCooperativeLaunchTooLarge) rather than start a
  // grid whose blocks could not all be resident, so the barrier cannot deadlock.
  err = cudaLaunchCooperativeKernel(persistent_kernel<T>(gates, args.units),
                                    dim3(static_cast<unsigned>(args.hidden / args.units)), dim3(kThreads), params,
                                    bytes, stream);
  return err != cudaSuccess ? err : cudaGetLastError();
}

}  // namespace

cudaError_t persistent_rnn_units(ElementType type, int gates, int64_t hidden, int* units) {
  *units = 0;
  if (type == ElementType::Float64) return cudaSuccess;
  return with_tensor_core_type(type, [&](auto storage) -> cudaError_t {
    using T = decltype(storage);
    // Fewest units per block (most blocks, so most SMs at work) whose grid is co-resident.
    for (const int candidate : {8, 16}) {
      bool fits = false;
      const cudaError_t err = co_resident<T>(gates, hidden, candidate, &fits);
      if (err != cudaSuccess) return err;
      if (fits) {
        *units = candidate;
        return cudaSuccess;
      }
    }
    return cudaSuccess;
  });
}

cudaError_t launch_persistent_lstm_forward(ElementType type, const PersistentRnnArgs& args, cudaStream_t stream) {
  return with_tensor_core_type(type, [&](auto storage) { return launch_persistent<decltype(storage)>(4, args, stream); });
}

cudaError_t launch_persistent_gru_forward(ElementType type, const PersistentRnnArgs& args, cudaStream_t stream) {
  return with_tensor_core_type(type, [&](auto storage) { return launch_persistent<decltype(storage)>(3, args, stream); });
}

}  // namespace cuda
}  // namespace padkern
