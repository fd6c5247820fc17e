// FlashAttention-2-style forward kernel for sm80+ (mma.sync), generic over a bias trait: a composition of
// the scheduler (which tile), the bias (ScoreMod), the sm80 mainloop, the online softmax and the epilogue.
//
// One thread block owns kBlockM query rows of one (batch, head) and walks the key tiles the bias lets it
// see, keeping O, the row max and the row sum on chip. All bias knowledge comes from the trait: which
// tiles to visit, which of them need per-element masking, and the per-element score.
#pragma once

#include <cute/tensor.hpp>

#include "common/fwd_block.cuh"
#include "common/params.hpp"
#include "sm80/epilogue_fwd_sm80.cuh"
#include "sm80/kernel_traits_sm80.cuh"
#include "sm80/mainloop_fwd_sm80.cuh"
#include "softmax.cuh"

namespace sdpa {

// kForm: how this launch evaluates the bias (BiasForm), chosen by the launcher for the problem. kVarlen: a
// variable-length batch (AttentionProblem::cu_seqlens_q): each block reads its sequence's lengths and
// offsets, and keys may come from a paged cache. The dense launch keeps them compile-time.
template <class Traits, class Bias, BiasForm kForm, bool kVarlen>
__global__ void __launch_bounds__(Traits::kNThreads, 1)
    flash_fwd_kernel_sm80(const __grid_constant__ FwdParams<typename Bias::Params> p) {
  using namespace cute;
  using Mainloop = sm80::MainloopFwdSm80<Traits, kVarlen>;
  using Epilogue = sm80::EpilogueFwdSm80<Traits>;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;

  const FwdBlock block = FwdBlock::of<kVarlen, Bias, kBlockM, kBlockN>(p);
  if (!block.has_rows) return;
  if (block.range.empty()) {
    Epilogue::store_empty(p, block.seq, block.tile);
    return;
  }
  const auto score_mod = block.score_mod<Bias, kForm, kBlockM>(p.bias);

  typename Traits::TiledMma mma;
  Tensor acc_o = partition_fragment_C(mma, Shape<Int<kBlockM>, Int<Traits::kHeadDim>>{});
  clear(acc_o);
  // (row, col) inside the score tile of every accumulator element this thread holds.
  Tensor coord_rc = acc_rowcol(
      mma.get_thread_slice(threadIdx.x).partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{})));
  constexpr int kNRows = decltype(size<0>(coord_rc))::value;
  OnlineSoftmax<kNRows> softmax;

  extern __shared__ __align__(128) char smem[];
  Mainloop::run(p, block.seq, block.coord, block.tile.m_block, block.range, score_mod, mma, acc_o, coord_rc,
                softmax, smem);

  float lse[kNRows];
  Tensor acc_o_rc = acc_rowcol(acc_o);
  softmax.finalize(acc_o_rc, p.softmax_c, lse);
  score_mod.adjust_lse(lse, coord_rc);
  Epilogue::store(p, block.seq, acc_o, coord_rc, lse, reinterpret_cast<typename Traits::Element*>(smem), mma,
                  block.tile);
}

}  // namespace sdpa
