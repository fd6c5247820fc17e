// The forward kernel, generic over an arch family and a bias trait: a composition of the block's setup
// (FwdBlock: scheduler, sequence, key range, bias view), the family's mainloop, the online softmax and the
// family's epilogue, for families whose threads all run the mainloop (the warp-specialized sm90 kernel,
// sm90/flash_fwd_kernel_sm90.cuh, composes the same pieces by role). All bias knowledge comes from the
// trait, all arch knowledge from the family:
//   struct Family {  // sm80::FwdArch (mma.sync)
//     template <class Traits, bool kVarlen> using Mainloop = ...;  // run(p, seq, coord, m_block, range,
//                                                                 //     score_mod, acc_o, coord_rc, softmax, smem)
//     template <class Traits> using Epilogue = ...;   // store(p, block, acc_o, coord_rc, lse, smem)
//   };
// and Traits gives the tile sizes and the MMAs whose accumulators hold S (TiledMmaS) and O (TiledMmaO).
//
// One thread block owns kBlockM query rows of one (batch, head) and walks the key tiles the bias lets it
// see, keeping O, the row max and the row sum on chip.
#pragma once

#include <cute/tensor.hpp>

#include "common/fwd_block.cuh"
#include "common/params.hpp"
#include "softmax.cuh"

namespace sdpa {

// kForm: how this launch evaluates the bias (BiasForm), chosen by the launcher for the problem. kVarlen: a
// variable-length batch (AttentionProblem::cu_seqlens_q): each block reads its sequence's lengths and
// offsets, and keys may come from a paged cache. The dense launch keeps them compile-time.
template <class Family, class Traits, class Bias, BiasForm kForm, bool kVarlen>
__global__ void __launch_bounds__(Traits::kNThreads, 1)
    flash_fwd_kernel(const __grid_constant__ FwdParams<typename Bias::Params> p) {
  using namespace cute;
  using Mainloop = typename Family::template Mainloop<Traits, kVarlen>;
  using Epilogue = typename Family::template Epilogue<Traits>;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;

  FwdBlock block;
  if (!FwdBlock::begin<kVarlen, Bias, Traits>(p, block)) return;
  const auto score_mod = block.score_mod<Bias, kForm, kBlockM>(p.bias);

  typename Traits::TiledMmaS mma_s;
  typename Traits::TiledMmaO mma_o;
  Tensor acc_o = partition_fragment_C(mma_o, Shape<Int<kBlockM>, Int<Traits::kHeadDim>>{});
  clear(acc_o);
  // (row, col) inside the score tile of every S accumulator element this thread holds. The thread index is
  // signed on purpose: with threadIdx.x's unsigned type the column coordinates cannot fold into one base plus
  // a constant per column, and the hd64 split-form ALiBi kernel kept 32 more registers live across its key
  // loop and spilled smem addresses there (11% slower on the H100; the layers refactor's one regression).
  const int tidx = threadIdx.x;
  Tensor coord_rc = acc_rowcol(
      mma_s.get_thread_slice(tidx).partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{})));
  constexpr int kNRows = decltype(size<0>(coord_rc))::value;
  OnlineSoftmax<kNRows> softmax;

  extern __shared__ __align__(128) char smem[];
  Mainloop::run(p, block.seq, block.coord, block.tile.m_block, block.range, score_mod, acc_o, coord_rc, softmax,
                smem);

  float lse[kNRows];
  Tensor acc_o_rc = acc_rowcol(acc_o);
  softmax.finalize(acc_o_rc, p.softmax_c, lse);
  score_mod.adjust_lse(lse, coord_rc);
  Epilogue::store(p, block, acc_o, coord_rc, lse, smem);
}

}  // namespace sdpa
