// Launch helpers for padkern's plain-CUDA kernels (no torch headers: nvcc stays fast).
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "padkern/int_math.h"

namespace padkern {
namespace cuda {

constexpr int kThreadsPerBlock = 256;
// gridDim.y and gridDim.z stop here (x at 2^31 - 1).
constexpr int64_t kMaxGridY = 65535;
// Grid-stride loops cover the rest; more blocks than this only add scheduling cost.
constexpr int64_t kMaxBlocks = int64_t{1} << 20;

inline unsigned blocks_for(int64_t work_items) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(kMaxBlocks, ceil_div(work_items, kThreadsPerBlock))));
}

}  // namespace cuda
}  // namespace padkern
