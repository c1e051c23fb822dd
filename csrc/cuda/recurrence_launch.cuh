// Shared pieces of the CUDA recurrences: element conversions, the per-sequence
// launch shape and the shared-memory plan.
//
// Design: one thread block per sequence runs all of that sequence's steps in one
// launch (no per-step launches, no sorting: each block reads its own offsets, and a
// zero-length sequence runs no steps). The hidden state lives in shared memory in
// the accumulation type; w_hh is copied into shared memory once when it fits
// (e.g. H <= 64 in fp32, H <= 96 in bf16 on an H100) and is otherwise read through L2,
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
};

// `state_bytes` of per-block state always; the weights too when the device allows it.
inline cudaError_t plan_shared(size_t state_bytes, size_t weight_bytes, SharedPlan* plan) {
  int device = 0, limit = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  err = cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (err != cudaSuccess) return err;
  plan->weights_in_shared = state_bytes + weight_bytes <= static_cast<size_t>(limit);
  plan->bytes = state_bytes + (plan->weights_in_shared ? weight_bytes : 0);
  if (plan->bytes > static_cast<size_t>(limit)) return cudaErrorInvalidValue;  // H too large for the state
  return cudaSuccess;
}

// Allows `kernel` the dynamic shared memory of `plan` (above 48 KB needs an opt-in).
template <typename Kernel>
cudaError_t allow_shared(Kernel kernel, const SharedPlan& plan) {
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(plan.bytes));
}

// Copies `count` elements into shared memory cooperatively.
template <typename T>
__device__ __forceinline__ void copy_to_shared(T* shared, const T* global, int64_t count) {
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) shared[i] = global[i];
}

}  // namespace cuda
}  // namespace padkern
