// What every backward mainloop does per step besides its products, arch-free: the shared-memory plan of a
// block, the statistics of the step's query rows, P recomputed from the LSE, and dS. The arithmetic works on
// (row, col) views of the score accumulators (acc_rowcol), whatever MMA produced them.
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>
#include <math_constants.h>

#include "common/block_coord.hpp"
#include "common/tile_range.hpp"
#include "softmax.cuh"

namespace sdpa {

// Shared memory of a dK/dV block, in this order: K, V, kQStages x Q, kQStages x dO, P, dS (Traits gives the
// element counts of its tiles).
template <class Traits>
struct BwdSmem {
  using Element = typename Traits::Element;
  Element* k;
  Element* v;
  Element* q;
  Element* d_o;
  Element* p;
  Element* ds;
  explicit __device__ BwdSmem(char* base) {
    k = reinterpret_cast<Element*>(base);
    v = k + Traits::kSmemKVElems;
    q = v + Traits::kSmemKVElems;
    d_o = q + Traits::kQStages * Traits::kSmemQdOElems;
    p = d_o + Traits::kQStages * Traits::kSmemQdOElems;
    ds = p + Traits::kSmemPdSElems;
  }
  __device__ Element* q_stage(int stage) const { return q + stage * Traits::kSmemQdOElems; }
  __device__ Element* d_o_stage(int stage) const { return d_o + stage * Traits::kSmemQdOElems; }
};

// The steps of the dK/dV block of key block n_block: every (query head of the GQA group, query block of
// `range`) pair, head-major.
struct BwdWalk {
  int head_kv, group, begin, steps_per_head;
  int col0;        // the block's first key
  bool partial_n;  // the key block ends past the sequence: every tile masks those columns (and keeps a dense
                   // bias read in bounds), whatever the bias's own q_tiles say
  template <class Params>
  __device__ BwdWalk(Params const& p, BlockCoord const& coord, TileRange const& range, int n_block, int block_n)
      : head_kv(coord.head_kv),
        group(p.group_size),
        begin(range.begin),
        steps_per_head(range.end - range.begin),
        col0(n_block * block_n),
        partial_n(n_block * block_n + block_n > p.seqlen_kv) {}
  __device__ int steps() const { return group * steps_per_head; }
  __device__ int head(int step) const { return head_kv * group + step / steps_per_head; }
  __device__ int m_block(int step) const { return begin + step % steps_per_head; }
};

// Statistics of the query rows row0 + coord_rc(r, 0) of (batch, head) row_base: lse_c, the LSE as this form's
// scores see it (ScoreMod::unadjust_lse) times log2 e, the offset exp2 takes (+inf for a row that kept no key
// or lies past the sequence: P recomputes to 0 there, never inf or NaN); dpsum, rowsum(dO O).
template <int kNRows, class ScoreModT, class Params, class TensorC>
__device__ __forceinline__ void load_row_stats(Params const& p, ScoreModT const& score_mod, TensorC const& coord_rc,
                                               int64_t row_base, int row0, float (&lse_c)[kNRows],
                                               float (&dpsum)[kNRows]) {
  using namespace cute;
  constexpr float kLog2e = 1.4426950408889634f;
#pragma unroll
  for (int r = 0; r < kNRows; ++r) {
    const int i = row0 + get<0>(coord_rc(r, 0));
    lse_c[r] = i < p.seqlen_q ? p.lse[row_base * p.seqlen_q + i] : -CUDART_INF_F;
    dpsum[r] = p.dpsum[row_base * p.seqlen_q_padded + i];
  }
  score_mod.unadjust_lse(lse_c, coord_rc);
#pragma unroll
  for (int r = 0; r < kNRows; ++r) lse_c[r] = lse_c[r] == -CUDART_INF_F ? CUDART_INF_F : lse_c[r] * kLog2e;
}

// P = exp(x - lse), in place of the softmax inputs x (ScoreMod::apply's output).
template <int kNRows, class TensorS>
__device__ __forceinline__ void recompute_p(TensorS& s, float const (&lse_c)[kNRows], float softmax_c) {
  using namespace cute;
#pragma unroll
  for (int r = 0; r < kNRows; ++r) {
#pragma unroll
    for (int k = 0; k < size<1>(s); ++k) s(r, k) = fast_exp2(fmaf(s(r, k), softmax_c, -lse_c[r]));
  }
}

// dS = P (dP - rowsum(dO O)), in place of dP.
template <int kNRows, class TensorDP, class TensorP>
__device__ __forceinline__ void ds_from_dp(TensorDP& dp, TensorP const& prob, float const (&dpsum)[kNRows]) {
  using namespace cute;
#pragma unroll
  for (int r = 0; r < kNRows; ++r) {
#pragma unroll
    for (int k = 0; k < size<1>(dp); ++k) dp(r, k) = prob(r, k) * (dp(r, k) - dpsum[r]);
  }
}

}  // namespace sdpa
