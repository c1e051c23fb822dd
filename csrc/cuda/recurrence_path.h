// Which CUDA kernel runs a forward recurrence: the per-sequence kernels (lstm.cu,
// gru.cu) or the persistent ones (persistent_rnn.cu), and the buffers the persistent
// ones need. Host code only. The two agree within the precision rules, not bitwise: the
// persistent kernels round the previous h to the storage type for the MMA (as cuDNN
// does) and run float32 as TF32, where the per-sequence kernels keep h in float32 and
// multiply exactly.
//
// PADKERN_CUDA_RNN chooses:
//   per_sequence (default)  one block per sequence;
//   auto                    persistent wherever it can run, per-sequence elsewhere;
//   persistent              persistent, and an error where it cannot run (tests, benchmarks).
// The persistent kernels run float16, bfloat16, and float32 where torch allows TF32
// (exact float32 and float64 run per sequence); H a multiple of 32 (halves) or 16
// (float32); and a grid of H / U blocks (U = 8, 16 or 32 units per block, the fewest
// that fit) that the device can hold at once, each with G*U rows of w_hh in shared
// memory. auto becomes the default once a GPU run has validated the persistent kernels.
#pragma once
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "element_type.h"
#include "padkern/aten_padding.h"
#include "padkern/rnn_kernels.h"

namespace padkern {

enum class RecurrencePath { PerSequence, Auto, Persistent };

inline RecurrencePath requested_recurrence_path() {
  const char* value = std::getenv("PADKERN_CUDA_RNN");
  const std::string name = value == nullptr ? "per_sequence" : value;
  if (name == "per_sequence" || name.empty()) return RecurrencePath::PerSequence;
  if (name == "auto") return RecurrencePath::Auto;
  if (name == "persistent") return RecurrencePath::Persistent;
  TORCH_CHECK(false, "padkern: PADKERN_CUDA_RNN must be per_sequence, auto or persistent, got '", name, "'");
  return RecurrencePath::PerSequence;
}

struct PersistentChoice {
  int units;      // hidden units per block; 0: run per sequence
  bool required;  // PADKERN_CUDA_RNN=persistent: a failed launch is an error, not a fallback
};

inline PersistentChoice persistent_choice(const at::Tensor& gates_x, int gates, int64_t hidden) {
  const RecurrencePath path = requested_recurrence_path();
  if (path == RecurrencePath::PerSequence) return {0, false};
  const bool tensor_cores = gates_x.scalar_type() == at::kHalf || gates_x.scalar_type() == at::kBFloat16 ||
                            (gates_x.scalar_type() == at::kFloat && tf32_allowed());
  int units = 0;
  if (tensor_cores) C10_CUDA_CHECK(cuda::persistent_rnn_units(element_type(gates_x), gates, hidden, &units));
  TORCH_CHECK(units > 0 || path == RecurrencePath::Auto,
              "padkern: PADKERN_CUDA_RNN=persistent, but this recurrence cannot run persistently here (dtype ",
              gates_x.scalar_type(), tensor_cores ? "" : " without TF32 allowed", ", H = ", hidden,
              "): it needs float16, bfloat16 or TF32 float32, H a multiple of 32 / 16, and a grid of H / U blocks "
              "with G*U rows of w_hh each that the device holds at once");
  return {units, path == RecurrencePath::Persistent};
}

// Launch errors after which `auto` runs the per-sequence kernels instead: the device could
// not hold the grid after all (MPS or an SM partition). Nothing else: a device fault left by
// an earlier kernel is sticky and must surface, not meet the per-sequence launch.
inline bool persistent_fallback(cudaError_t err, const PersistentChoice& choice) {
  if (choice.required || (err != cudaErrorCooperativeLaunchTooLarge && err != cudaErrorNotSupported)) {
    return false;
  }
  (void)cudaGetLastError();  // clear it: nothing ran
  return true;
}

// w_hh as the persistent kernels read it: contiguous and 16-byte aligned (a contiguous
// view may start at any element; its 16-byte copies would fault).
inline at::Tensor aligned_weights(const at::Tensor& w_hh) {
  at::Tensor w = w_hh.contiguous();
  return reinterpret_cast<uintptr_t>(w.data_ptr()) % 16 == 0 ? w : w.clone();
}

// The sequences longest first (on the device: no host synchronisation), the hidden
// states in that order in the first half of a two-step ring, and the float32 state
// (c for the LSTM, h for the GRU) in that order.
struct PersistentBuffers {
  at::Tensor order, sorted_lengths, hidden_ring, state;
};

inline PersistentBuffers persistent_buffers(const at::Tensor& offsets, int64_t tokens, const at::Tensor& h0,
                                            const at::Tensor& state0) {
  const int64_t batch = offsets.size(0) - 1;
  // The kernel's step count and each sequence's own span agree whatever the offsets hold.
  auto [sorted_lengths, order] =
      at::sort(span_lengths(offsets, tokens), /*stable=*/true, /*dim=*/0, /*descending=*/true);
  at::Tensor ring = at::empty({2, batch, h0.size(1)}, h0.options());
  ring[0].copy_(h0.index_select(0, order));
  return {order.contiguous(), sorted_lengths.contiguous(), ring,
          state0.index_select(0, order).to(at::kFloat).contiguous()};
}

}  // namespace padkern
