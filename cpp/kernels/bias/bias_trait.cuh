// A bias trait: one additive part (NoAdditive, AlibiSlopes, DenseValues) and one causal mask, composed.
//
// Everything a kernel needs to know about a bias is here, and nowhere else:
//   Params                      what the host passes in (built from sdpa::BiasDesc by make_params)
//   BiasTrait(params, coord, h) the view for the rows of query head h in the block at `coord` (a
//                               BlockCoord); a block of one head builds one, a packed block one per row
//   score<Element>(s, i, j)     the biased score of element (i, j) given the scaled score s; -inf if masked
//   kv_tiles / q_tiles          which tiles a span of positions visits, and which need element masking
//   split_holds / row_part / column_part   a cheaper equivalent of value() that kernels may use (below)
//   stage_tile / staged_value              a tile of the bias copied to shared memory (dense biases)
//   tile_source / staged_pair              the same tile as raw bytes, for TMA (sm90)
// Kernels call only these (through ScoreMod, common/score_mod.cuh), so a new bias is one new additive
// part or causal variant, not a kernel edit.
#pragma once

#include "alibi.cuh"
#include "causal_mask.cuh"
#include "dense_bias.cuh"
#include "no_bias.cuh"

namespace sdpa {

template <class Additive, CausalVariant kCausalVariant>
struct BiasTrait {
  using AdditivePart = Additive;
  using Mask = CausalMask<kCausalVariant>;
  using Params = typename Additive::Params;

  static constexpr BiasKind kKind = Additive::kKind;
  static constexpr CausalVariant kCausal = kCausalVariant;
  static constexpr bool kHasValue = Additive::kHasValue;
  static constexpr bool kIsCausal = Mask::kIsCausal;

  static Params make_params(const BiasDesc& bias) { return Additive::make_params(bias); }

  Additive additive;
  Mask mask;

  BiasTrait() = default;
  SDPA_HOST_DEVICE BiasTrait(const Params& params, const BlockCoord& coord, int head_q)
      : additive(params, coord, head_q), mask(coord.seqlen_q, coord.seqlen_kv) {}

  SDPA_HOST_DEVICE bool masked(int i, int j) const { return mask.masked(i, j); }

  template <class Element>
  SDPA_HOST_DEVICE float value(int i, int j) const {
    return additive.template value<Element>(i, j);
  }

  template <class Element>
  SDPA_HOST_DEVICE float score(float scaled_score, int i, int j) const {
    if (masked(i, j)) return -__builtin_huge_valf();
    return kHasValue ? scaled_score + value<Element>(i, j) : scaled_score;
  }

  // Softmax is invariant to a per-row constant. When split_holds(), every key the causal mask keeps lies on
  // or left of the additive part's own diagonal, where value(i, j) == row_part(i, row0) +
  // column_part(j, row0) for any row0; a kernel may then score kept elements as scaled + column_part(j)
  // (one FMA, column parts computed once per tile column) and add row_part(i) to the LSE alone. Holds for
  // ALiBi with lower-right causal always, and with upper-left causal when Skv >= Sq.
  static constexpr bool kSplittable = Additive::kSplittable && kIsCausal;
  static SDPA_HOST_DEVICE bool split_holds(int seqlen_q, int seqlen_kv) {
    if constexpr (kSplittable) {
      return Mask::diagonal_offset(seqlen_q, seqlen_kv) <= Additive::split_diagonal(seqlen_q, seqlen_kv);
    }
    return false;
  }
  SDPA_HOST_DEVICE float row_part(int i, int row0) const { return additive.row_part(i, row0); }
  SDPA_HOST_DEVICE float column_part(int j, int row0) const { return additive.column_part(j, row0); }

  // Shared-memory staging of the additive part (DenseValues::stage_tile); usable when the params say so.
  static constexpr bool kStagesTile = Additive::kStagesTile;
  static bool stageable(const Params& params) {
    if constexpr (kStagesTile) return params.stageable;
    return false;
  }
  template <class Element, int kRows, int kCols>
  static SDPA_HOST_DEVICE constexpr int staged_tile_bytes() {
    if constexpr (kStagesTile) return Additive::template staged_tile_bytes<Element, kRows, kCols>();
    return 0;
  }
  template <class Element, int kRows, int kCols, int kThreads>
  SDPA_HOST_DEVICE void stage_tile(char* smem, int row0, int col0, int seqlen_q, int thread) const {
    additive.template stage_tile<Element, kRows, kCols, kThreads>(smem, row0, col0, seqlen_q, thread);
  }
  template <class Element, int kCols>
  SDPA_HOST_DEVICE float staged_value(const char* smem, int r, int c) const {
    return additive.template staged_value<Element, kCols>(smem, r, c);
  }
  // Tiles staged as raw bytes by TMA (DenseValues::TileSource and what follows it).
  static auto tile_source(const Params& params, int element_bytes, int seqlen_q, int seqlen_kv, int heads,
                          int batch) {
    return Additive::tile_source(params, element_bytes, seqlen_q, seqlen_kv, heads, batch);
  }
#if defined(__CUDACC__)
  template <class Element>
  __device__ __forceinline__ int staged_bytes() const {
    return additive.template staged_bytes<Element>();
  }
  __device__ __forceinline__ int staged_row(int r) const { return additive.staged_row(r); }
  template <class Element, int kBytes>
  __device__ __forceinline__ float2 staged_pair(uint32_t bits) const {
    return additive.template staged_pair<Element, kBytes>(bits);
  }
#endif

  // Tile ranges depend on the positions a tile covers only (PositionSpan: a block, a decode tile, the
  // positions of a packed GQA block); the additive part never removes a whole tile.
  static SDPA_HOST_DEVICE TileRange kv_tiles(PositionSpan rows, int block_n, int seqlen_q, int seqlen_kv) {
    return Mask::kv_tiles(rows, block_n, seqlen_q, seqlen_kv);
  }
  static SDPA_HOST_DEVICE TileRange q_tiles(PositionSpan cols, int block_m, int seqlen_q, int seqlen_kv) {
    return Mask::q_tiles(cols, block_m, seqlen_q, seqlen_kv);
  }
  // The same for query block m_block of block_m rows (key block n_block of block_n columns).
  static SDPA_HOST_DEVICE TileRange kv_tiles(int m_block, int block_m, int block_n, int seqlen_q,
                                             int seqlen_kv) {
    return kv_tiles(PositionSpan::of_block(m_block, block_m, seqlen_q), block_n, seqlen_q, seqlen_kv);
  }
  static SDPA_HOST_DEVICE TileRange q_tiles(int n_block, int block_m, int block_n, int seqlen_q,
                                            int seqlen_kv) {
    return q_tiles(PositionSpan::of_block(n_block, block_n, seqlen_kv), block_m, seqlen_q, seqlen_kv);
  }
};

// The additive part of each BiasKind.
template <BiasKind kKind>
struct AdditiveFor;
template <>
struct AdditiveFor<BiasKind::kNone> {
  using type = NoAdditive;
};
template <>
struct AdditiveFor<BiasKind::kAlibi> {
  using type = AlibiSlopes;
};
template <>
struct AdditiveFor<BiasKind::kDense> {
  using type = DenseValues;
};

// The names used everywhere (C++ kernels, the Python bindings, explain(), generated file names), one per
// entry of sdpa/bias_traits.def: NoBias, CausalUpperLeft, ..., DenseBiasCausalLowerRight.
#define SDPA_BIAS_TRAIT(Name, Kind, Causal) \
  using Name = BiasTrait<typename AdditiveFor<BiasKind::Kind>::type, CausalVariant::Causal>;
#include "sdpa/bias_traits.def"
#undef SDPA_BIAS_TRAIT

}  // namespace sdpa
