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

// Persistent and dynamic (the sm90 forward's dense launches): one block per SM; each block starts at tile
// blockIdx.x and then takes the next tile of one linear order from an atomic counter (gridDim.x + the
// counter's old value), so a block that finished early takes more tiles and no block waits for a slot.
// The order:
//  - (query head, batch) pairs come in sections of `pairs_per_section` (the launcher's cap, at most as many
//    as fit half the L2), so the tiles in flight at once read the K/V of few pairs, from L2;
//  - inside a section, query blocks from the last to the first (with a causal mask the last ones see the
//    most key tiles: longest processing time first), every pair of the section per query block, query head
//    fastest (neighbouring heads of a GQA group share K/V), or batch fastest (batch_fastest: the batch
//    elements of one head share a (1, H, Sq, Skv) bias tile, read from L2 by all but the first).
// A static deal of this order (t += gridDim.x) lost 10-16% on causal shapes: the blocks' sums drift apart at
// every section boundary.
struct PersistentTileSchedulerFwd {
  struct Params {
    int m_blocks = 0;
    int heads_q = 0;
    int pairs = 0;  // heads_q * batch
    int pairs_per_section = 1;
    bool batch_fastest = false;
    int num_tiles = 0;
    int* counter = nullptr;  // tiles handed out beyond the first gridDim.x; zero at launch
  };
  // kv_bytes_per_head_q: the K and V bytes one query head reads (a GQA group's heads share theirs); sections
  // of at most max_pairs pairs, and of as many as fit half of l2_bytes (at least one). No counter: the
  // launcher sets one where it runs fewer blocks than tiles.
  static Params make(int seqlen_q, int block_m, int heads_q, int batch, double kv_bytes_per_head_q,
                     double l2_bytes, int max_pairs, bool batch_fastest = false) {
    Params s;
    s.m_blocks = (seqlen_q + block_m - 1) / block_m;
    s.heads_q = heads_q;
    s.batch_fastest = batch_fastest;
    s.pairs = heads_q * batch;
    const double fit = kv_bytes_per_head_q > 0 ? 0.5 * l2_bytes / kv_bytes_per_head_q : s.pairs;
    const int most = max_pairs < s.pairs ? max_pairs : s.pairs;
    s.pairs_per_section = fit >= most ? most : (fit < 1 ? 1 : static_cast<int>(fit));
    s.num_tiles = s.m_blocks * s.pairs;
    return s;
  }
  static SDPA_HOST_DEVICE FwdTile tile(Params const& s, int t) {
    const int per_section = s.m_blocks * s.pairs_per_section;
    const int section = t / per_section;
    const int first_pair = section * s.pairs_per_section;
    const int pairs = s.pairs - first_pair < s.pairs_per_section ? s.pairs - first_pair : s.pairs_per_section;
    const int r = t - section * per_section;
    const int pair = first_pair + r % pairs;
    FwdTile tile;
    tile.m_block = s.m_blocks - 1 - r / pairs;
    if (s.batch_fastest) {
      const int batch = s.pairs / s.heads_q;
      tile.head_q = pair / batch;
      tile.batch = pair % batch;
    } else {
      tile.head_q = pair % s.heads_q;
      tile.batch = pair / s.heads_q;
    }
    return tile;
  }
#if defined(__CUDACC__)
  // The tile after this block's current one (>= num_tiles: none is left). One thread calls it. Without a
  // counter the grid has a block per tile, and each has only its first.
  static __device__ __forceinline__ int next(Params const& s) {
    return s.counter != nullptr ? atomicAdd(s.counter, 1) + static_cast<int>(gridDim.x) : s.num_tiles;
  }
#endif
};

// The order a forward kernel of this bias trait and layout uses (launch and kernel must agree).
template <class Bias, bool kVarlen>
using FwdSchedulerFor = SingleTileSchedulerFwd<Bias::kKind == BiasKind::kDense && !kVarlen>;

}  // namespace sdpa
