// The sm80 forward epilogue: normalized O through shared memory to 16-byte global stores, and the LSE.
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>
#include <math_constants.h>

#include "common/fwd_block.cuh"
#include "common/seq_info.hpp"
#include "common/tile_scheduler.hpp"
#include "sm80/gemm_sm80.cuh"

namespace sdpa {
namespace sm80 {

template <class Traits>
struct EpilogueFwdSm80 {
  using Element = typename Traits::Element;
  static constexpr int kBlockM = Traits::kBlockM;
  static constexpr int kHeadDim = Traits::kHeadDim;

  // Writes the block's normalized O (through smem, which Q's buffer provides) and, if asked, its LSE, at
  // the rows `seq` gives its sequence.
  template <class Params, class TensorO, class TensorC, int kNRows>
  static __device__ __forceinline__ void store(Params const& p, FwdBlock const& block, TensorO const& acc_o,
                                               TensorC const& coord_rc, float (&lse)[kNRows], char* smem) {
    const SeqInfo& seq = block.seq;
    const FwdTile& tile = block.tile;
    const int tidx = threadIdx.x;
    typename Traits::TiledMma mma;
    Tensor rO = convert_fragment<Element>(acc_o);
    Tensor sO = make_tensor(make_smem_ptr(reinterpret_cast<Element*>(smem)), typename Traits::SmemLayoutO{});
    auto r2s = make_tiled_copy_C(typename Traits::SmemCopyAtomO{}, mma);
    auto r2s_thr = r2s.get_thread_slice(tidx);
    __syncthreads();  // every warp is done reading Q, whose smem O now takes
    copy(r2s, r2s_thr.retile_S(rO), r2s_thr.partition_D(sO));
    __syncthreads();

    Tensor gO = output_tile(p, seq, tile);
    typename Traits::GmemTiledCopyO s2g;
    auto s2g_thr = s2g.get_thread_slice(tidx);
    Tensor tOsO = s2g_thr.partition_S(sO);
    Tensor tOgO = s2g_thr.partition_D(gO);
    Tensor tOrO = make_tensor<Element>(shape(tOgO));
    copy(s2g, tOsO, tOrO);
    const int rows_left = seq.seqlen_q - tile.m_block * kBlockM;
    store_rows(s2g, s2g_thr, tOrO, tOgO, rows_left);

    block.store_lse<kBlockM>(p, coord_rc, lse);
  }

 private:
  // The block's (kBlockM, kHeadDim) tile of O in global memory.
  template <class Params>
  static __device__ __forceinline__ auto output_tile(Params const& p, SeqInfo const& seq, FwdTile const& tile) {
    Tensor mO = head_matrix<kHeadDim>(static_cast<Element*>(const_cast<void*>(p.o.data)),
                                      seq.q_offset(p.o, tile.batch, tile.head_q, 0), p.o.stride_seq, seq.seqlen_q);
    return local_tile(mO, Shape<Int<kBlockM>, Int<kHeadDim>>{}, make_coord(tile.m_block, 0));
  }

  // Stores the rows of a thread's O fragment that lie inside the sequence.
  template <class TiledCopy, class ThrCopy, class TensorR, class TensorG>
  static __device__ __forceinline__ void store_rows(TiledCopy const& s2g, ThrCopy const& s2g_thr, TensorR const& src,
                                                    TensorG& dst, int rows_left) {
    Tensor tOcO = s2g_thr.partition_D(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));
#pragma unroll
    for (int m = 0; m < size<1>(dst); ++m) {
      if (get<0>(tOcO(0, m, 0)) < rows_left) copy(s2g, src(_, m, _), dst(_, m, _));
    }
  }
};

}  // namespace sm80
}  // namespace sdpa
