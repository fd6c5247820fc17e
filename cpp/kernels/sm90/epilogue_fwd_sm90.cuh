// The sm90 forward epilogue: normalized O from the wgmma accumulator straight to global memory (each thread
// holds pairs of adjacent columns: one 4-byte store per pair), and the LSE.
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>
#include <math_constants.h>

#include "common/fwd_block.cuh"
#include "common/seq_info.hpp"
#include "common/tile_scheduler.hpp"
#include "softmax.cuh"

namespace sdpa {
namespace sm90 {

template <class Traits>
struct EpilogueFwdSm90 {
  using Element = typename Traits::Element;
  static constexpr int kBlockM = Traits::kBlockM;
  static constexpr int kHeadDim = Traits::kHeadDim;

  // acc_o: the normalized O accumulator; coord_rc: the (row, column) in the score tile of each score this
  // thread holds (its rows give the LSE's rows); thread: the index among the consumer threads. O goes out
  // from registers.
  template <class Params, class TensorO, class TensorC, int kNRows>
  static __device__ __forceinline__ void store(Params const& p, FwdBlock const& block, TensorO const& acc_o,
                                               TensorC const& coord_rc, float (&lse)[kNRows], int thread) {
    const SeqInfo& seq = block.seq;
    const FwdTile& tile = block.tile;
    using namespace cute;
    Tensor acc_o_rc = acc_rowcol(acc_o);
    typename Traits::TiledMmaPV mma_pv;
    Tensor coord_o = acc_rowcol(mma_pv.get_thread_slice(thread)
                                    .partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{})));
    const int rows_left = seq.seqlen_q - tile.m_block * kBlockM;
    Element* o = output_rows(p, seq, tile);
#pragma unroll
    for (int r = 0; r < size<0>(acc_o_rc); ++r) {
      const int row = get<0>(coord_o(r, 0));
      if (row >= rows_left) continue;
      Element* dst = o + int64_t(row) * p.o.stride_seq;
#pragma unroll
      for (int k = 0; k < size<1>(acc_o_rc); k += 2) {
        alignas(4) Element pair[2] = {Element(acc_o_rc(r, k)), Element(acc_o_rc(r, k + 1))};
        *reinterpret_cast<uint32_t*>(dst + get<1>(coord_o(r, k))) = *reinterpret_cast<const uint32_t*>(pair);
      }
    }
    block.store_lse<kBlockM>(p, coord_rc, lse);
  }

 private:
  // The block's first output row.
  template <class Params>
  static __device__ __forceinline__ Element* output_rows(Params const& p, SeqInfo const& seq, FwdTile const& tile) {
    return static_cast<Element*>(const_cast<void*>(p.o.data)) +
           seq.q_offset(p.o, tile.batch, tile.head_q, tile.m_block * kBlockM);
  }
};

}  // namespace sm90
}  // namespace sdpa
