// What a forward block knows before its mainloop, arch-free: which tile it owns, its sequence's lengths
// and offsets, the key tiles its bias lets it see, and the coordinate its bias view is built from. Every
// forward kernel (sm80, sm90) starts from it.
#pragma once

#include <cstdint>

#include <math_constants.h>

#include "common/block_coord.hpp"
#include "common/params.hpp"
#include "common/score_mod.cuh"
#include "common/seq_info.hpp"
#include "common/tile_range.hpp"
#include "common/tile_scheduler.hpp"

namespace sdpa {

struct FwdBlock {
  FwdTile tile;
  SeqInfo seq;
  TileRange range;
  BlockCoord coord;
  bool has_rows;  // false: a shorter sequence of a variable-length batch, whose grid fits the longest

  // The block at blockIdx (FwdSchedulerFor) of kBlockM rows and kBlockN-key tiles. kVarlen: lengths
  // and offsets from the problem's SeqLayout; otherwise the dense layout, known at compile time.
  template <bool kVarlen, class Bias, int kBlockM, int kBlockN, class Params>
  static __device__ __forceinline__ FwdBlock of(Params const& p) {
    return at<kVarlen, Bias, kBlockM, kBlockN>(p, FwdSchedulerFor<Bias, kVarlen>::tile());
  }
  // The same for a given tile (a persistent kernel's).
  template <bool kVarlen, class Bias, int kBlockM, int kBlockN, class Params>
  static __device__ __forceinline__ FwdBlock at(Params const& p, FwdTile const& tile) {
    FwdBlock b;
    b.tile = tile;
    b.seq = kVarlen ? SeqInfo::of(p.seq, b.tile.batch, p.seqlen_q, p.seqlen_kv)
                    : SeqInfo::dense(p.seqlen_q, p.seqlen_kv);
    b.has_rows = !kVarlen || b.tile.m_block * kBlockM < b.seq.seqlen_q;
    b.range = Bias::kv_tiles(PositionSpan::of_block(b.tile.m_block, kBlockM, b.seq.seqlen_q), kBlockN,
                             b.seq.seqlen_q, b.seq.seqlen_kv);
    // One query head per block: group 1 in the coordinate, so the whole tile shares one view of the bias.
    b.coord = {b.tile.batch, b.tile.head_q / p.group_size, b.tile.head_q, 1, b.seq.seqlen_q, b.seq.seqlen_kv};
    return b;
  }

  // The block at blockIdx for a kernel of `Traits` tiles, into `b`; false when it has nothing to compute: no
  // rows (a shorter sequence of a varlen batch) or no visible key (then it has stored O = 0 and LSE = -inf).
  template <bool kVarlen, class Bias, class Traits, class Params>
  static __device__ __forceinline__ bool begin(Params const& p, FwdBlock& b) {
    b = of<kVarlen, Bias, Traits::kBlockM, Traits::kBlockN>(p);
    if (!b.has_rows) return false;
    if (b.range.empty()) {
      b.store_empty<typename Traits::Element, Traits::kBlockM, Traits::kHeadDim>(p);
      return false;
    }
    return true;
  }

  // Index in the LSE of row `row` of the block's kBlockM rows: (B, Hq, Sq) contiguous, or (total_q, Hq) for
  // a variable-length batch.
  template <int kBlockM, class Params>
  __device__ __forceinline__ int64_t lse_index(Params const& p, int row) const {
    return seq.lse_index(tile.batch, tile.head_q, tile.m_block * kBlockM + row, p.heads_q, p.seqlen_q);
  }

  // A block whose rows see no key at all (e.g. lower-right causal with Sq > Skv) writes O = 0 and LSE =
  // -inf, 16 bytes per thread per step (rare, so no tiled copy).
  // `thread` of `threads` (by default the whole block).
  template <class Element, int kBlockM, int kHeadDim, class Params>
  __device__ __forceinline__ void store_empty(Params const& p, int thread = threadIdx.x,
                                              int threads = blockDim.x) const {
    constexpr int kVec = 16 / int(sizeof(Element));
    const int rows = min(kBlockM, seq.seqlen_q - tile.m_block * kBlockM);
    Element* o = static_cast<Element*>(const_cast<void*>(p.o.data)) +
                 seq.q_offset(p.o, tile.batch, tile.head_q, tile.m_block * kBlockM);
    for (int i = thread; i < rows * (kHeadDim / kVec); i += threads) {
      const int row = i / (kHeadDim / kVec), col = (i % (kHeadDim / kVec)) * kVec;
      *reinterpret_cast<uint4*>(o + int64_t(row) * p.o.stride_seq + col) = make_uint4(0u, 0u, 0u, 0u);
    }
    if (p.lse == nullptr) return;
    for (int row = thread; row < rows; row += threads) p.lse[lse_index<kBlockM>(p, row)] = -CUDART_INF_F;
  }

  // Each row's LSE, from the threads whose scores hold it: a row lives in the four lanes of a quad (the
  // sm80 mma.sync and the sm90 wgmma accumulators alike), and the one holding column 0 writes it. coord_rc:
  // the (row, column) inside the score tile of each score the thread holds.
  template <int kBlockM, class Params, class TensorC, int kNRows>
  __device__ __forceinline__ void store_lse(Params const& p, TensorC const& coord_rc,
                                            float const (&lse)[kNRows]) const {
    using cute::get;
    if (p.lse == nullptr) return;
    const int rows_left = seq.seqlen_q - tile.m_block * kBlockM;
#pragma unroll
    for (int r = 0; r < kNRows; ++r) {
      const int row = get<0>(coord_rc(r, 0));
      if (get<1>(coord_rc(r, 0)) == 0 && row < rows_left) p.lse[lse_index<kBlockM>(p, row)] = lse[r];
    }
  }

  // The block's view of the bias, for tiles whose rows start at m_block * kBlockM.
  template <class Bias, BiasForm kForm, int kBlockM>
  __device__ __forceinline__ ScoreMod<Bias, kForm> score_mod(typename Bias::Params const& params) const {
    return {Bias(params, coord, coord.head_q_first), tile.m_block * kBlockM, seq.seqlen_q, seq.seqlen_kv};
  }
};

}  // namespace sdpa
