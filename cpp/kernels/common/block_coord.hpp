// Which rows a thread block works on: the coordinate a bias trait is built from.
//
// A tile's rows belong to `group` query heads that share kv head `head_kv`. Packed row r (counted from
// the start of the (batch, head_kv) problem, not of the tile) is position r / group of query head
// head_q_first + r % group, the PackGQA convention. group == 1 is one head per tile, today's kernels.
#pragma once

#include "common/host_device.hpp"

namespace sdpa {

struct BlockCoord {
  int batch = 0;
  int head_kv = 0;
  int head_q_first = 0;
  int group = 1;  // query heads packed into the tile's rows
  int seqlen_q = 0;
  int seqlen_kv = 0;

  SDPA_HOST_DEVICE int head_q(int packed_row) const { return head_q_first + packed_row % group; }
  SDPA_HOST_DEVICE int position(int packed_row) const { return packed_row / group; }
};

}  // namespace sdpa
