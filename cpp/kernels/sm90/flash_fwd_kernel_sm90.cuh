// The Hopper (sm90a) forward kernel: the sm80 kernel's composition (scheduler, bias through ScoreMod,
// mainloop, online softmax, epilogue) with the wgmma mainloop and epilogue of sm90/. One block of
// kBlockM / 64 warpgroups owns kBlockM query rows of one (batch, head).
#pragma once

#include <cute/tensor.hpp>

#include "common/fwd_block.cuh"
#include "common/params.hpp"
#include "sm90/epilogue_fwd_sm90.cuh"
#include "sm90/kernel_traits_sm90.cuh"
#include "sm90/mainloop_fwd_sm90.cuh"
#include "softmax.cuh"

namespace sdpa {

template <class Traits, class Bias, BiasForm kForm, bool kVarlen>
__global__ void __launch_bounds__(Traits::kNThreads, 1)
    flash_fwd_kernel_sm90(const __grid_constant__ FwdParams<typename Bias::Params> p) {
  using namespace cute;
  using Mainloop = sm90::MainloopFwdSm90<Traits, kVarlen>;
  using Epilogue = sm90::EpilogueFwdSm90<Traits>;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;

  const FwdBlock block = FwdBlock::of<kVarlen, Bias, kBlockM, kBlockN>(p);
  if (!block.has_rows) return;
  if (block.range.empty()) {
    Epilogue::store_empty(p, block.seq, block.tile);
    return;
  }
  const auto score_mod = block.score_mod<Bias, kForm, kBlockM>(p.bias);

  typename Traits::TiledMmaQK mma_qk;
  typename Traits::TiledMmaPV mma_pv;
  Tensor acc_o = partition_fragment_C(mma_pv, Shape<Int<kBlockM>, Int<Traits::kHeadDim>>{});
  clear(acc_o);
  Tensor coord_rc = acc_rowcol(
      mma_qk.get_thread_slice(threadIdx.x).partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{})));
  constexpr int kNRows = decltype(size<0>(coord_rc))::value;
  OnlineSoftmax<kNRows> softmax;

  extern __shared__ __align__(128) char smem[];
  Mainloop::run(p, block.seq, block.coord, block.tile.m_block, block.range, score_mod, acc_o, coord_rc, softmax,
                smem);

  float lse[kNRows];
  Tensor acc_o_rc = acc_rowcol(acc_o);
  softmax.finalize(acc_o_rc, p.softmax_c, lse);
  score_mod.adjust_lse(lse, coord_rc);
  Tensor coord_o = acc_rowcol(mma_pv.get_thread_slice(threadIdx.x)
                                  .partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<Traits::kHeadDim>>{})));
  Epilogue::store(p, block.seq, acc_o_rc, coord_o, coord_rc, lse, block.tile);
}

}  // namespace sdpa
