// Integer rounding shared by the kernels' tilings, on the host and the device.
#pragma once
#include <cstdint>

#include "padkern/ragged_layout.h"  // PADKERN_HOST_DEVICE

namespace padkern {

// Tiles of `tile` items that cover `count` items (count >= 0, tile > 0).
PADKERN_HOST_DEVICE constexpr int64_t ceil_div(int64_t count, int64_t tile) { return (count + tile - 1) / tile; }

// `value` rounded up to a multiple of `multiple` (value >= 0, multiple > 0).
PADKERN_HOST_DEVICE constexpr int64_t round_up(int64_t value, int64_t multiple) {
  return ceil_div(value, multiple) * multiple;
}

}  // namespace padkern
