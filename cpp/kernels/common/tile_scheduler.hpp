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

// Persistent: at most one block per SM, each walking tiles t = blockIdx.x, blockIdx.x + gridDim.x, ... of
// one linear order, so a block's next tile starts while its last one is being stored (no launch gap, no
// tail of blocks waiting for a slot) and the longest tiles start first across the whole grid:
//  - (query head, batch) pairs come in sections of `pairs_per_section`, sized so that a section's keys and
//    values fit in half the L2 together: the tiles in flight at once then share their K/V there;
//  - inside a section, query blocks from the last to the first (with a causal mask the last ones see the
//    most key tiles: longest processing time first), every pair of the section per query block.
// Pairs are numbered query head fastest (neighbouring heads of a GQA group share K/V), or batch fastest
// for a dense bias, as in SingleTileSchedulerFwd<true>.
struct PersistentTileSchedulerFwd {
  struct Params {
    int m_blocks = 0;
    int heads_q = 0;
    int batch = 0;
    int pairs_per_section = 1;
    int num_tiles = 0;
    bool batch_fastest = false;
  };
  // kv_bytes_per_head_q: the K and V bytes one query head reads (a GQA group's heads share theirs).
  static Params make(int seqlen_q, int block_m, int heads_q, int batch, double kv_bytes_per_head_q,
                     double l2_bytes, bool batch_fastest) {
    Params s;
    s.m_blocks = (seqlen_q + block_m - 1) / block_m;
    s.heads_q = heads_q;
    s.batch = batch;
    const int pairs = heads_q * batch;
    const double fit = kv_bytes_per_head_q > 0 ? 0.5 * l2_bytes / kv_bytes_per_head_q : pairs;
    s.pairs_per_section = fit >= pairs ? pairs : (fit < 1 ? 1 : static_cast<int>(fit));
    s.num_tiles = s.m_blocks * pairs;
    s.batch_fastest = batch_fastest;
    return s;
  }
  static SDPA_HOST_DEVICE FwdTile tile(Params const& s, int t) {
    const int per_section = s.m_blocks * s.pairs_per_section;
    const int section = t / per_section;
    const int first_pair = section * s.pairs_per_section;
    const int pairs_total = s.heads_q * s.batch;
    const int pairs = pairs_total - first_pair < s.pairs_per_section ? pairs_total - first_pair : s.pairs_per_section;
    const int r = t - section * per_section;
    const int pair = first_pair + r % pairs;
    FwdTile tile;
    tile.m_block = s.m_blocks - 1 - r / pairs;
    if (s.batch_fastest) {
      tile.batch = pair % s.batch;
      tile.head_q = pair / s.batch;
    } else {
      tile.head_q = pair % s.heads_q;
      tile.batch = pair / s.heads_q;
    }
    return tile;
  }
};

// The order a forward kernel of this bias trait and layout uses (launch and kernel must agree).
template <class Bias, bool kVarlen>
using FwdSchedulerFor = SingleTileSchedulerFwd<Bias::kKind == BiasKind::kDense && !kVarlen>;

}  // namespace sdpa
