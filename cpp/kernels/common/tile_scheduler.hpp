// Which thread block does which tile: the scheduler maps the launch grid onto (query block, batch, query
// head). Arch-free; the grid is computed on the host, the tile read on the device.
#pragma once

#include "common/host_device.hpp"
#include "sdpa/bias.hpp"  // BiasKind

namespace sdpa {

struct FwdTile {
  int m_block = 0;
  int batch = 0;
  int head_q = 0;
};

// One tile per block, grid (query blocks, query heads, batch). The query blocks run in reverse order:
// with a causal mask the blocks at the bottom of the matrix have the most key tiles, so they start first
// (longest-processing-time first within each head).
//
// kBatchFastest (the dense-bias kernels): grid (batch, query blocks, query heads) instead, so the blocks of
// one (query block, head) for every batch element run side by side. A bias broadcast over the batch, the
// usual (1, H, Sq, Skv) or (1, 1, Sq, Skv) shape, is then read from HBM once per row block and from L2 by
// the other batch elements, instead of once per batch element: with the default order their blocks are
// Sq / kBlockM * Hq blocks apart and the bias rows are long evicted. Key and value keep their locality:
// the blocks in flight cover a few heads of every batch element. Varlen launches never take it.
template <bool kBatchFastest = false>
struct SingleTileSchedulerFwd {
  struct Grid {
    int x, y, z;
  };
  static Grid grid(int seqlen_q, int block_m, int heads_q, int batch) {
    const int m_blocks = (seqlen_q + block_m - 1) / block_m;
    if constexpr (kBatchFastest) return {batch, m_blocks, heads_q};
    return {m_blocks, heads_q, batch};
  }
#if defined(__CUDACC__)
  static __device__ __forceinline__ FwdTile tile() {
    if constexpr (kBatchFastest) {
      return {static_cast<int>(gridDim.y - 1 - blockIdx.y), static_cast<int>(blockIdx.x),
              static_cast<int>(blockIdx.z)};
    }
    return {static_cast<int>(gridDim.x - 1 - blockIdx.x), static_cast<int>(blockIdx.z),
            static_cast<int>(blockIdx.y)};
  }
#endif
};

// The order a forward kernel of this bias trait and layout uses (launch and kernel must agree).
template <class Bias, bool kVarlen>
using FwdSchedulerFor = SingleTileSchedulerFwd<Bias::kKind == BiasKind::kDense && !kVarlen>;

}  // namespace sdpa
