// Which thread block does which tile: the scheduler maps the launch grid onto (query block, batch, query
// head). Arch-free; the grid is computed on the host, the tile read on the device.
#pragma once

#include "common/host_device.hpp"

namespace sdpa {

struct FwdTile {
  int m_block = 0;
  int batch = 0;
  int head_q = 0;
};

// One tile per block, grid (query blocks, query heads, batch). The query blocks run in reverse order:
// with a causal mask the blocks at the bottom of the matrix have the most key tiles, so they start first
// (longest-processing-time first within each head).
struct SingleTileSchedulerFwd {
  struct Grid {
    int x, y, z;
  };
  static Grid grid(int seqlen_q, int block_m, int heads_q, int batch) {
    return {(seqlen_q + block_m - 1) / block_m, heads_q, batch};
  }
#if defined(__CUDACC__)
  static __device__ __forceinline__ FwdTile tile() {
    return {static_cast<int>(gridDim.x - 1 - blockIdx.x), static_cast<int>(blockIdx.z),
            static_cast<int>(blockIdx.y)};
  }
#endif
};

}  // namespace sdpa
