// The sm90 forward kernel, warp-specialized: the same block setup (FwdBlock), bias view (ScoreMod), online
// softmax and LSE rules as the generic kernel (common/flash_fwd_kernel.cuh), with the roles split by
// warpgroup: warpgroup 0 copies tiles (MainloopFwdSm90::load), the consumer warpgroups compute and store
// (MainloopFwdSm90::mma, EpilogueFwdSm90). setmaxnreg moves registers from the producer to the consumers.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/arch/reg_reconfig.h>

#include "common/fwd_block.cuh"
#include "common/params.hpp"
#include "common/tile_scheduler.hpp"
#include "sm90/epilogue_fwd_sm90.cuh"
#include "sm90/mainloop_fwd_sm90.cuh"
#include "softmax.cuh"

namespace sdpa {
namespace sm90 {

// A dense launch is persistent (PersistentTileSchedulerFwd): one block per SM, each computing tiles until the
// scheduler's counter runs out, its next tile's loads overlapping the current one's last GEMMs and its store.
// Variable-length batches keep one tile per block.
template <class Bias, bool kVarlen>
constexpr bool kPersistentFwdSm90 = !kVarlen;

// One tile of the consumer warpgroups: the mainloop, then O and the LSE out. thread: the index among the
// consumer threads; score_mod: the block's view of the bias.
template <class Traits, class Bias, bool kVarlen, class Params, class ScoreModT, class Smem, class State>
__device__ __forceinline__ void consume_tile(Params const& p, FwdBlock const& block, ScoreModT const& score_mod,
                                             Smem const& smem, int thread, State& st) {
  using namespace cute;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  typename Traits::TiledMmaQK mma_s;
  typename Traits::TiledMmaPV mma_o;
  Tensor acc_o = partition_fragment_C(mma_o, Shape<Int<kBlockM>, Int<Traits::kHeadDim>>{});
  clear(acc_o);
  // (row, col) inside the score tile of every S accumulator element this thread holds.
  Tensor coord_rc = acc_rowcol(
      mma_s.get_thread_slice(thread).partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{})));
  constexpr int kNRows = decltype(size<0>(coord_rc))::value;
  OnlineSoftmax<kNRows> softmax;

  MainloopFwdSm90<Traits, kVarlen>::template mma<kPersistentFwdSm90<Bias, kVarlen>>(p, block.range, score_mod, acc_o,
                                                                                  coord_rc, softmax, smem, thread, st);

  float lse[kNRows];
  Tensor acc_o_rc = acc_rowcol(acc_o);
  softmax.finalize(acc_o_rc, p.softmax_c, lse);
  score_mod.adjust_lse(lse, coord_rc);
  EpilogueFwdSm90<Traits>::store(p, block, acc_o, coord_rc, lse, thread);
}

// The persistent block's roles. The producer's warp 0 issues every TMA copy and fetches the tiles (the
// other producer warps have nothing to do and leave); a tile whose rows see no key is stored empty by the
// consumers and skipped by the producer.
template <class Traits, class Bias, BiasForm kForm, class Params, class Smem>
__device__ __forceinline__ void produce_persistent(Params const& p, Smem const& smem) {
  using Mainloop = MainloopFwdSm90<Traits, false>;
  using Scheduler = PersistentTileSchedulerFwd;
  if (threadIdx.x >= 32) return;
  typename Mainloop::ProducerState st;
  int t = blockIdx.x;  // the launch has at most one block per tile
  for (int published = 0;; ++published) {
    const FwdBlock block = FwdBlock::at<false, Bias, Traits::kBlockM, Traits::kBlockN>(p, Scheduler::tile(p.sched, t));
    if (!block.range.empty()) {
      Mainloop::template load<true>(p, block.seq, block.coord, block.tile.m_block, block.range,
                                    block.score_mod<Bias, kForm, Traits::kBlockM>(p.bias), smem, st);
    }
    int next = 0;
    if (threadIdx.x == 0) next = Scheduler::next(p.sched);
    t = __shfl_sync(0xffffffffu, next, 0);
    TileHandoff<Traits::kNConsumerThreads>::publish(smem.barriers().handoff, t, published);
    if (t >= p.sched.num_tiles) return;
  }
}

template <class Traits, class Bias, BiasForm kForm, class Params, class Smem>
__device__ __forceinline__ void consume_persistent(Params const& p, Smem const& smem, int thread) {
  typename MainloopFwdSm90<Traits, false>::ConsumerState st;
  int received = 0;
  for (int t = blockIdx.x; t < p.sched.num_tiles;
       t = TileHandoff<Traits::kNConsumerThreads>::receive(smem.barriers().handoff, received++, p.sched.num_tiles)) {
    const FwdBlock block =
        FwdBlock::at<false, Bias, Traits::kBlockM, Traits::kBlockN>(p, PersistentTileSchedulerFwd::tile(p.sched, t));
    if (block.range.empty()) {
      block.store_empty<typename Traits::Element, Traits::kBlockM, Traits::kHeadDim>(p, thread,
                                                                                      Traits::kNConsumerThreads);
    } else {
      consume_tile<Traits, Bias, false>(p, block, block.score_mod<Bias, kForm, Traits::kBlockM>(p.bias), smem, thread,
                                        st);
    }
  }
}

// kForm: how this launch evaluates the bias (BiasForm); kVarlen: a variable-length batch, as in the generic
// kernel; p carries the TMA descriptors of a dense launch (the bias tile's too, in the staged form) and the
// schedule of a persistent one. Dynamic shared memory: MainloopFwdSm90::smem_bytes<kForm>().
template <class Traits, class Bias, BiasForm kForm, bool kVarlen>
__global__ void __launch_bounds__(Traits::kNThreads, 1)
    flash_fwd_kernel_sm90(const __grid_constant__ FwdParamsSm90<FwdParams<typename Bias::Params>,
                                                                TmaFor<Traits, kVarlen>,
                                                                BiasTmaFor<Traits, kForm>> p) {
  using Mainloop = MainloopFwdSm90<Traits, kVarlen>;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr bool kPersistent = kPersistentFwdSm90<Bias, kVarlen>;

  // A one-tile block: its tile, and its view of the bias (a persistent block takes both per tile and leaves
  // these default and unused).
  FwdBlock block;
  if constexpr (!kPersistent) {
    if (!FwdBlock::begin<kVarlen, Bias, Traits>(p, block)) return;
  }
  const auto score_mod = block.score_mod<Bias, kForm, kBlockM>(p.bias);

  extern __shared__ __align__(1024) char smem_buf[];
  const typename Mainloop::Smem smem{smem_buf, Mainloop::template bias_bytes<kForm>()};
  Mainloop::init_barriers(smem);

  if (threadIdx.x < Traits::kNProducerThreads) {
    cutlass::arch::warpgroup_reg_dealloc<Traits::producer_regs(kVarlen)>();
    if constexpr (kPersistent) {
      produce_persistent<Traits, Bias, kForm>(p, smem);
    } else {
      typename Mainloop::ProducerState st;
      Mainloop::template load<false>(p, block.seq, block.coord, block.tile.m_block, block.range, score_mod, smem, st);
    }
    return;
  }
  cutlass::arch::warpgroup_reg_alloc<Traits::consumer_regs(kVarlen)>();
  const int thread = threadIdx.x - Traits::kNProducerThreads;
  if constexpr (kPersistent) {
    consume_persistent<Traits, Bias, kForm>(p, smem, thread);
  } else {
    typename Mainloop::ConsumerState st;
    consume_tile<Traits, Bias, kVarlen>(p, block, score_mod, smem, thread, st);
  }
}

}  // namespace sm90
}  // namespace sdpa
