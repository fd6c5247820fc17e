// PackedScoreMod: ScoreMod's elementwise form for a tile whose rows belong to several query heads.
//
// A packed GQA tile (BlockCoord with group > 1) holds, in row r, position r / group of query head
// head_q_first + r % group, so the bias differs per row: ALiBi's slope, and the causal position. This
// policy keeps one view of the trait per row a thread holds (two for an sm80 16x8 fragment) and the row's
// position, built once per block; apply() then scores every element through the trait, like ScoreMod's
// elementwise form. A dense bias is read per element from global memory here (its staged form reads one
// head per tile): for decode's few rows that is a few bytes per key next to the K/V row's hundreds.
#pragma once

#include <cute/tensor.hpp>
#include <math_constants.h>

#include "common/block_coord.hpp"

namespace sdpa {

template <class Bias, int kNRows>
struct PackedScoreMod {
  Bias view[kNRows];
  int position[kNRows];
  int seqlen_kv;  // the block's sequence's (a variable-length batch has one per sequence)

  // coord_rc: (row, col) inside the tile of each accumulator element this thread holds; row0: the packed
  // row of the tile's first row. Rows past the problem's last packed row are computed but never stored;
  // they take the last row's view, so the trait never reads a head that does not exist.
  template <class Params, class TensorC>
  __device__ __forceinline__ PackedScoreMod(Params const& p, BlockCoord const& coord, TensorC const& coord_rc,
                                            int row0)
      : seqlen_kv(coord.seqlen_kv) {
    using namespace cute;
    const int last_row = coord.group * coord.seqlen_q - 1;
#pragma unroll
    for (int r = 0; r < kNRows; ++r) {
      const int packed = min(row0 + get<0>(coord_rc(r, 0)), last_row);
      view[r] = Bias(p.bias, coord, coord.head_q(packed));
      position[r] = coord.position(packed);
    }
  }

  // Turns raw scores S of the columns starting at col0 into the softmax input x. Unmasked tiles hold only
  // kept keys inside the sequence.
  template <bool kMasked, class Element, class TensorS, class TensorC, class Params>
  __device__ __forceinline__ void apply(TensorS& s, TensorC const& coord_rc, Params const& p, int col0) const {
    using namespace cute;
    const bool prescale = Bias::kHasValue || p.prescale;
    if (!kMasked && !prescale) return;
#pragma unroll
    for (int r = 0; r < kNRows; ++r) {
#pragma unroll
      for (int k = 0; k < size<1>(s); ++k) {
        const int j = col0 + get<1>(coord_rc(r, k));
        const float scaled = prescale ? s(r, k) * p.scale : s(r, k);
        if constexpr (kMasked) {
          s(r, k) = j >= seqlen_kv ? -CUDART_INF_F : view[r].template score<Element>(scaled, position[r], j);
        } else if constexpr (Bias::kHasValue) {
          s(r, k) = scaled + view[r].template value<Element>(position[r], j);
        } else {
          s(r, k) = scaled;
        }
      }
    }
  }
};

}  // namespace sdpa
