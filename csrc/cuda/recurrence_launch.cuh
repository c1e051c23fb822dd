// Shared pieces of the CUDA recurrences: element conversions, the per-sequence
// launch shape and the shared-memory plan.
//
// Design: one thread block per sequence runs all of that sequence's steps in one
// launch (no per-step launches, no sorting: each block reads its own offsets, and a
// zero-length sequence runs no steps). The hidden state lives in shared memory in
// the accumulation type; w_hh is copied into shared memory once when it fits
// (G x H elements: for the LSTM on an H100, 227 KB, up to H of about 118 in fp32 and
// 168 in bf16; for the one-gate RNN, about 240 and 340) and is otherwise read through L2,
// where all B blocks share one copy.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "padkern/rnn_kernels.h"

namespace padkern {
namespace cuda {

template <typename A, typename T>
__device__ __forceinline__ A to_acc(T value) {
  return static_cast<A>(value);
}
template <>
__device__ __forceinline__ float to_acc<float, __half>(__half value) {
  return __half2float(value);
}
template <>
__device__ __forceinline__ float to_acc<float, __nv_bfloat16>(__nv_bfloat16 value) {
  return __bfloat162float(value);
}

template <typename T, typename A>
__device__ __forceinline__ T from_acc(A value) {
  return static_cast<T>(value);
}
template <>
__device__ __forceinline__ __half from_acc<__half, float>(float value) {
  return __float2half_rn(value);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16, float>(float value) {
  return __float2bfloat16_rn(value);
}

constexpr int kMaxThreads = 1024;

// One thread per hidden unit up to 1024; larger H loops over units.
inline int threads_for(int64_t hidden) {
  const int64_t rounded = (hidden + 31) / 32 * 32;
  return static_cast<int>(std::min<int64_t>(kMaxThreads, std::max<int64_t>(32, rounded)));
}

struct SharedPlan {
  size_t bytes;
  bool weights_in_shared;
  int device_limit;  // the device's opt-in maximum per block
};

// `state_bytes` of per-block state always; the weights too when the device allows it.
inline cudaError_t plan_shared(size_t state_bytes, size_t weight_bytes, SharedPlan* plan) {
  int device = 0, limit = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  err = cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (err != cudaSuccess) return err;
  plan->device_limit = limit;
  plan->weights_in_shared = state_bytes + weight_bytes <= static_cast<size_t>(limit);
  plan->bytes = state_bytes + (plan->weights_in_shared ? weight_bytes : 0);
  // H too large for the state (the bindings' check_state_fits names the limit first).
  if (plan->bytes > static_cast<size_t>(limit)) return cudaErrorInvalidValue;
  return cudaSuccess;
}

// Allows `kernel` dynamic shared memory above 48 KB (an opt-in): the device's maximum, not
// this call's need, so that another host thread launching the same kernel for a smaller H
// can never lower the allowance under this launch.
template <typename Kernel>
cudaError_t allow_shared(Kernel kernel, const SharedPlan& plan) {
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, plan.device_limit);
}

// The weights a recurrence reads every step: copied once into `shared` (the caller
// synchronises before use) when they fit there, else read through L2 from `global`.
template <bool InShared, typename T>
__device__ __forceinline__ const T* stage_weights(const T* global, T* shared, int64_t count) {
  if (!InShared) return global;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) shared[i] = global[i];
  return shared;
}

// Calls launch(T{}, A{}) with the storage type T and accumulation type A of `type`.
template <typename Launch>
cudaError_t with_element_type(ElementType type, Launch&& launch) {
  switch (type) {
    case ElementType::Float32: return launch(float{}, float{});
    case ElementType::Float64: return launch(double{}, double{});
    case ElementType::Float16: return launch(__half{}, float{});
    case ElementType::BFloat16: return launch(__nv_bfloat16{}, float{});
  }
  return cudaErrorInvalidValue;
}

// One block per sequence, with `state_bytes` of shared state and the weights beside it
// when they fit (`weights_in_shared`), else `weights_through_l2`.
template <typename Args>
cudaError_t launch_per_sequence(void (*weights_in_shared)(Args), void (*weights_through_l2)(Args), const Args& args,
                                size_t state_bytes, size_t weight_bytes, cudaStream_t stream) {
  if (args.batch == 0 || args.hidden == 0) return cudaSuccess;
  SharedPlan plan;
  cudaError_t err = plan_shared(state_bytes, weight_bytes, &plan);
  if (err != cudaSuccess) return err;
  auto kernel = plan.weights_in_shared ? weights_in_shared : weights_through_l2;
  if ((err = allow_shared(kernel, plan)) != cudaSuccess) return err;
  kernel<<<static_cast<unsigned>(args.batch), threads_for(args.hidden), plan.bytes, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace padkern
