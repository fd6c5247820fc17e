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

// Persistent (causal launches of the sm90 kernel): at most one block per SM walks a list of tiles, so a
// block's next tile starts while its last one is being stored, with no launch gap. A causal tile's work
// grows with its query block, and one wave of blocks per tile in grid order leaves a tail of unequal
// blocks; here the tiles are ordered longest first across the whole grid (query blocks from the last to
// the first, every (query head, batch) pair per query block) and dealt out in rounds of one per block,
// every other round in reverse (block c takes the c-th tile of even rounds and the c-th from the end of odd
// ones), so each block's sum of long and short tiles comes out even. A static deal: no counter in global
// memory, no workspace. (Dealt in plain rounds instead, or in L2-sized sections of pairs, the blocks' sums
// drift apart: 0.84-0.90x the one-tile-per-block grid on the H100, see benchmarks/NOTES.md.)
// Pairs are numbered query head fastest (neighbouring heads of a GQA group share K/V), or batch fastest for
// a dense bias, as in SingleTileSchedulerFwd<true>.
struct PersistentTileSchedulerFwd {
  struct Params {
    int m_blocks = 0;
    int heads_q = 0;
    int batch = 0;
    int num_tiles = 0;
    bool batch_fastest = false;
  };
  static Params make(int seqlen_q, int block_m, int heads_q, int batch, bool batch_fastest) {
    Params s;
    s.m_blocks = (seqlen_q + block_m - 1) / block_m;
    s.heads_q = heads_q;
    s.batch = batch;
    s.num_tiles = s.m_blocks * heads_q * batch;
    s.batch_fastest = batch_fastest;
    return s;
  }
  // Position in the longest-first order of the tile `block` (of `blocks`) computes in `round`; may be past
  // the last tile in the last round.
  static SDPA_HOST_DEVICE int dealt(int round, int block, int blocks) {
    return round * blocks + ((round & 1) ? blocks - 1 - block : block);
  }
  static SDPA_HOST_DEVICE FwdTile tile(Params const& s, int t) {
    const int pairs = s.heads_q * s.batch;
    const int pair = t % pairs;
    FwdTile tile;
    tile.m_block = s.m_blocks - 1 - t / pairs;
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
