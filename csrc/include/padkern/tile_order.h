// The order in which the blocks of a 2-D tiled GEMM grid take their output tiles.
#pragma once
#include <cstdint>

#include "padkern/ragged_layout.h"  // PADKERN_HOST_DEVICE

namespace padkern {

struct TileCoord {
  int64_t row, col;
};

// Row tile and column tile of the block with linear index `linear` in dispatch order
// (blockIdx.x fastest). Taken plainly, the blocks resident at one time would all share
// one column tile and sweep every row tile, so the input would be streamed from memory
// once per column tile. Instead blocks go in groups of `group` row tiles x every column
// tile, down the rows first: the blocks resident together read a few row tiles and a few
// column tiles, which stay in L2. A bijection on [0, row_tiles * col_tiles).
PADKERN_HOST_DEVICE TileCoord grouped_tile_order(int64_t linear, int64_t row_tiles, int64_t col_tiles, int64_t group) {
  const int64_t per_group = group * col_tiles;
  const int64_t first_row = (linear / per_group) * group;
  const int64_t rows_here = row_tiles - first_row < group ? row_tiles - first_row : group;
  const int64_t within = linear % per_group;
  return {first_row + within % rows_here, within / rows_here};
}

}  // namespace padkern
