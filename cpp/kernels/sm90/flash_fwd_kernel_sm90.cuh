// The sm90 forward kernel, warp-specialized: the same block setup (FwdBlock), bias view (ScoreMod), online
// softmax and LSE rules as the generic kernel (common/flash_fwd_kernel.cuh), with the roles split by
// warpgroup: warpgroup 0 copies tiles (MainloopFwdSm90::load), the consumer warpgroups compute and store
// (MainloopFwdSm90::mma, EpilogueFwdSm90). setmaxnreg moves registers from the producer to the consumers.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/arch/reg_reconfig.h>

#include "common/fwd_block.cuh"
#include "common/params.hpp"
#include "sm90/epilogue_fwd_sm90.cuh"
#include "sm90/mainloop_fwd_sm90.cuh"
#include "softmax.cuh"

namespace sdpa {
namespace sm90 {

// kForm: how this launch evaluates the bias (BiasForm); kVarlen: a variable-length batch, as in the generic
// kernel; p carries the TMA descriptors of a dense launch. Dynamic shared memory:
// MainloopFwdSm90::smem_bytes(bias bytes of one tile).
template <class Traits, class Bias, BiasForm kForm, bool kVarlen>
__global__ void __launch_bounds__(Traits::kNThreads, 1)
    flash_fwd_kernel_sm90(const __grid_constant__ FwdParamsSm90<FwdParams<typename Bias::Params>,
                                                                TmaFor<Traits, kVarlen>> p) {
  using namespace cute;
  using Mainloop = MainloopFwdSm90<Traits, kVarlen>;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;

  FwdBlock block;
  if (!FwdBlock::begin<kVarlen, Bias, Traits>(p, block)) return;
  const auto score_mod = block.score_mod<Bias, kForm, kBlockM>(p.bias);

  extern __shared__ __align__(1024) char smem_buf[];
  const typename Mainloop::Smem smem{
      smem_buf, ScoreMod<Bias, kForm>::template smem_bytes<typename Traits::Element, kBlockM, kBlockN>()};
  Mainloop::init_barriers(smem);

  if (threadIdx.x < Traits::kNProducerThreads) {
    cutlass::arch::warpgroup_reg_dealloc<Traits::producer_regs(kVarlen)>();
    Mainloop::load(p, block.seq, block.coord, block.tile.m_block, block.range, score_mod, smem);
    return;
  }
  cutlass::arch::warpgroup_reg_alloc<Traits::consumer_regs(kVarlen)>();
  const int thread = threadIdx.x - Traits::kNProducerThreads;

  typename Traits::TiledMmaQK mma_s;
  typename Traits::TiledMmaPV mma_o;
  Tensor acc_o = partition_fragment_C(mma_o, Shape<Int<kBlockM>, Int<Traits::kHeadDim>>{});
  clear(acc_o);
  // (row, col) inside the score tile of every S accumulator element this thread holds.
  Tensor coord_rc = acc_rowcol(
      mma_s.get_thread_slice(thread).partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{})));
  constexpr int kNRows = decltype(size<0>(coord_rc))::value;
  OnlineSoftmax<kNRows> softmax;

  Mainloop::mma(p, block.range, score_mod, acc_o, coord_rc, softmax, smem, thread);

  float lse[kNRows];
  Tensor acc_o_rc = acc_rowcol(acc_o);
  softmax.finalize(acc_o_rc, p.softmax_c, lse);
  score_mod.adjust_lse(lse, coord_rc);
  EpilogueFwdSm90<Traits>::store(p, block, acc_o, coord_rc, lse, thread);
}

}  // namespace sm90
}  // namespace sdpa
