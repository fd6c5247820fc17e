// The sm90 forward mainloop, warp-specialized. The producer warpgroup copies Q once and then K and V tile by
// tile into kStages-deep shared-memory pipelines whose mbarriers say when a stage has landed and when the
// consumers are done with it. The staged form's bias tile has a two-stage pipeline of its own, fed by TMA
// (sm90/bias_tile_sm90.cuh). The consumer warpgroups run both GEMMs on wgmma: S = Q K^T from shared memory,
// O += P V with P in the registers that held S.
//
// Two overlaps keep the tensor cores busy while a warpgroup does softmax:
//  - inside a warpgroup, P V of tile n + 1 (the tile before, in walk order) is issued together with Q K^T
//    of tile n, in one turn at the tensor cores. The source waits for that P V after the softmax of tile n,
//    but ptxas moves the wait to the top of the softmax (the conversion of the new P into the registers P V
//    reads needs it; benchmarks/NOTES.md, tenth session), so in the SASS this softmax follows this P V;
//  - across the consumer warpgroups (two, three with 192-row tiles), named barriers let one warpgroup issue
//    its GEMMs while another is in its softmax (ping-pong), so their GEMMs do not contend. This is the overlap
//    that keeps the tensor pipe busy (78.5% of the time at d128 without a mask, ncu).
// Q, K and V of a dense problem come by TMA (one thread issues each tile; sm90/tma_fwd_sm90.cuh); a
// variable-length batch's packed or paged rows come by the sm80 kernel's cp.async loaders, from all 128
// producer threads. Dense biases have no variable-length form, so a staged bias tile always comes by TMA.
#pragma once

#include <type_traits>
#include <utility>

#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/pipeline/sm90_pipeline.hpp>

#include "common/block_coord.hpp"
#include "common/host_device.hpp"  // SDPA_INLINE_LAMBDA
#include "common/seq_info.hpp"
#include "common/tile_range.hpp"
#include "sm80/gemm_sm80.cuh"  // head_matrix, load_tile, convert_fragment: cp.async and conversions, any arch
#include "sm80/kv_loads_sm80.cuh"
#include "sm90/bias_tile_sm90.cuh"
#include "sm90/gemm_sm90.cuh"
#include "sm90/tile_handoff_sm90.cuh"
#include "sm90/tma_fwd_sm90.cuh"
#include "softmax.cuh"

namespace sdpa {
namespace sm90 {

template <class Traits, bool kVarlen>
struct MainloopFwdSm90 {
  using Element = typename Traits::Element;
  static constexpr int kBlockM = Traits::kBlockM;
  static constexpr int kBlockN = Traits::kBlockN;
  static constexpr int kHeadDim = Traits::kHeadDim;
  static constexpr int kStages = Traits::kStages;
  static constexpr bool kTma = !kVarlen;
  using Tma = TmaFwd<Traits>;
  using Pipeline = std::conditional_t<kTma, cutlass::PipelineTmaAsync<kStages>, cutlass::PipelineAsync<kStages>>;
  using PipelineState = typename Pipeline::PipelineState;
  using BiasTile = BiasTileSm90<kBlockM, kBlockN>;
  using BiasPipeline = cutlass::PipelineTmaAsync<BiasTile::kStages>;

  // The mbarriers, after the tiles in shared memory (the tiles keep their 1024-byte swizzle alignment).
  struct Barriers {
    typename Pipeline::SharedStorage k;         // K of a stage landed / released
    typename Pipeline::SharedStorage v;
    typename BiasPipeline::SharedStorage bias;  // the staged bias tile (staged form only)
    alignas(8) uint64_t q;                      // Q landed
    alignas(8) uint64_t q_free;                 // the consumers are done with the last tile's Q (persistent)
    typename TileHandoff<Traits::kNConsumerThreads>::SharedStorage handoff;  // the next tile (persistent)
  };

  // Where each role is in the pipelines: a persistent block keeps them across its tiles, so stage indices
  // and phases go on from one tile to the next. `tiles`: the tiles computed so far (the Q barriers' phase).
  struct ProducerState {
    PipelineState kv = cutlass::make_producer_start_state<Pipeline>();
    typename BiasPipeline::PipelineState bias = cutlass::make_producer_start_state<BiasPipeline>();
    int tiles = 0;
  };
  struct ConsumerState {
    PipelineState k, v;  // consumers start at phase 0
    typename BiasPipeline::PipelineState bias;
    int tiles = 0;
  };

  // Shared memory: Q, K stages, V stages, the bias tile's stages (staged form only: bias_bytes), barriers.
  struct Smem {
    char* base;
    int bias_bytes;
    __device__ Element* q() const { return reinterpret_cast<Element*>(base); }
    __device__ Element* k(int stage) const { return q() + Traits::kSmemQElems + stage * Traits::kSmemKVElems; }
    __device__ Element* v(int stage) const { return k(kStages) + stage * Traits::kSmemKVElems; }
    __device__ char* bias(int stage) const {
      return reinterpret_cast<char*>(v(kStages)) + stage * BiasTile::kStageBytes;
    }
    __device__ Barriers& barriers() const { return *reinterpret_cast<Barriers*>(bias(0) + bias_bytes); }
  };
  template <BiasForm kForm>
  static constexpr int bias_bytes() {
    return kForm == BiasForm::kStaged ? BiasTile::kSmemBytes : 0;
  }
  template <BiasForm kForm>
  static constexpr int smem_bytes() {
    return Traits::kSmemBytes + bias_bytes<kForm>() + int(sizeof(Barriers));
  }

  // Thread roles: warpgroup 0 produces, the others consume. Called by every thread before the roles split.
  static __device__ __forceinline__ void init_barriers(Smem const& smem) {
    Barriers& bars = smem.barriers();
    if (threadIdx.x == 0) {
      cutlass::arch::ClusterBarrier::init(&bars.q, kTma ? 1 : Traits::kNProducerThreads);
      cutlass::arch::ClusterBarrier::init(&bars.q_free, Traits::kNConsumerThreads);
      TileHandoff<Traits::kNConsumerThreads>::init(bars.handoff);
    }
    // The K and V pipelines are initialized by warp 0 inside their constructors (pipeline(..., true_type)).
    make_pipeline<Pipeline>(bars.k, true);
    make_pipeline<Pipeline>(bars.v, true);
    make_pipeline<BiasPipeline>(bars.bias, true);
    __syncthreads();
  }

  // transaction_bytes: what one stage's TMA copies bring (a bias tile's depend on its element type).
  template <class P>
  static __device__ __forceinline__ P make_pipeline(typename P::SharedStorage& storage, bool init,
                                                    uint32_t transaction_bytes = Tma::kBytesKV) {
    typename P::Params params;
    params.role = threadIdx.x < Traits::kNProducerThreads ? P::ThreadCategory::Producer
                                                          : P::ThreadCategory::Consumer;
    if constexpr (std::is_same_v<P, cutlass::PipelineTmaAsync<P::Stages>>) {
      // Thread 0 issues the copies and arms each stage with the bytes its copy brings.
      params.transaction_bytes = transaction_bytes;
      params.is_leader = threadIdx.x == 0;
      params.num_consumers = Traits::kNConsumerThreads;
      const auto cluster = cute::Shape<cute::_1, cute::_1, cute::_1>{};
      if (init) return P(storage, params, cluster, cute::true_type{}, cute::true_type{});
      return P(storage, params, cluster, cute::false_type{}, cute::true_type{});
    } else {
      params.producer_arv_count = Traits::kNProducerThreads;
      params.consumer_arv_count = Traits::kNConsumerThreads;
      if (init) return P(storage, params, cute::true_type{});
      return P(storage, params, cute::false_type{});
    }
  }
  template <class Params>
  static __device__ __forceinline__ BiasPipeline bias_pipeline(Params const& p, Barriers& bars) {
    if constexpr (std::is_same_v<decltype(p.bias_tile), NoTma>) {
      return make_pipeline<BiasPipeline>(bars.bias, false, 0);
    } else {
      return make_pipeline<BiasPipeline>(bars.bias, false, p.bias_tile.tile_bytes());
    }
  }

  // Without TMA a stage is committed by each producer thread's cp.async.mbarrier.arrive.noinc: one arrival
  // per thread (the barriers expect kNProducerThreads), made by the hardware once the thread's copies have
  // landed. With TMA the stage's barrier counts the bytes the copy brings.
  // (CUTLASS's producer_commit with cpasync_barrier_arrive arrives twice per thread in one phase, which
  // compute-sanitizer's synccheck reports.)
  //
  // Both roles walk the key tiles of `range` in one order: the last tile first (the only one that may be
  // partial), then down.

  // ---- producer warpgroup --------------------------------------------------------------------------------
  // One tile; `st` carries the pipelines' positions from the block's tile before (if any) to the next.
  // kPersistent: the block may compute more tiles (a one-tile block compiles without the Q hand-over).
  template <bool kPersistent, class Params, class ScoreModT>
  static __device__ __forceinline__ void load(Params const& p, SeqInfo const& seq, BlockCoord const& coord,
                                              int m_block, TileRange const& range, ScoreModT const& score_mod,
                                              Smem const& smem, ProducerState& st) {
    using namespace cute;
    const int tidx = threadIdx.x;  // 0 .. kNProducerThreads - 1
    const int seqlen_q = coord.seqlen_q;
    Barriers& bars = smem.barriers();
    Pipeline pipe_k = make_pipeline<Pipeline>(bars.k, false), pipe_v = make_pipeline<Pipeline>(bars.v, false);
    BiasPipeline pipe_bias = bias_pipeline(p, bars);
    PipelineState& state = st.kv;
    typename BiasPipeline::PipelineState& state_bias = st.bias;

    Tensor sQ = make_tensor(make_smem_ptr(smem.q()), typename Traits::SmemLayoutQ{});
    auto stage_kv = [](Element* base) { return make_tensor(make_smem_ptr(base), typename Traits::SmemLayoutKV{}); };
    // load_q(): Q into sQ, arriving on bars.q; load_kv(is_k, n, state): tile n of K or V into the stage.
    // With TMA only thread 0 issues copies (`issuer`), and producer_acquire arms the stage's byte count.
    const bool issuer = !kTma || tidx == 0;
    auto [load_q, load_kv] = [&] {
      if constexpr (kTma) {
        auto const& tma = p.tma;
        Tensor mQ = tma.q.get_tma_tensor(tma.shape_q);
        Tensor mK = tma.k.get_tma_tensor(tma.shape_kv);
        Tensor mV = tma.v.get_tma_tensor(tma.shape_kv);
        Tensor gQ = local_tile(mQ(_, _, coord.head_q_first, coord.batch), Shape<Int<kBlockM>, Int<kHeadDim>>{},
                               make_coord(m_block, _0{}));
        Tensor gK = local_tile(mK(_, _, coord.head_kv, coord.batch), Shape<Int<kBlockN>, Int<kHeadDim>>{},
                               make_coord(_, _0{}));
        Tensor gV = local_tile(mV(_, _, coord.head_kv, coord.batch), Shape<Int<kBlockN>, Int<kHeadDim>>{},
                               make_coord(_, _0{}));
        auto q = [&, gQ] {
          cutlass::arch::ClusterTransactionBarrier::arrive_and_expect_tx(&bars.q, Tma::kBytesQ);
          auto thr = tma.q.get_slice(_0{});
          copy(tma.q.with(bars.q), thr.partition_S(gQ), thr.partition_D(sQ));
        };
        auto kv = [&, gK, gV](bool is_k, int n, PipelineState const& state, Pipeline& pipe) {
          auto const& copy_op = is_k ? tma.k : tma.v;
          auto thr = copy_op.get_slice(_0{});
          Tensor dst = stage_kv(is_k ? smem.k(state.index()) : smem.v(state.index()));
          Tensor src = thr.partition_S(is_k ? gK : gV);
          copy(copy_op.with(*pipe.producer_get_barrier(state)), src(_, _, _, n), thr.partition_D(dst));
        };
        return std::make_pair(q, kv);
      } else {
        auto q = [&] {
          Tensor gQ = local_tile(sm80::head_matrix<kHeadDim>(static_cast<const Element*>(p.q.data),
                                                             seq.q_offset(p.q, coord.batch, coord.head_q_first, 0),
                                                             p.q.stride_seq, seqlen_q),
                                 Shape<Int<kBlockM>, Int<kHeadDim>>{}, make_coord(m_block, 0));
          typename Traits::GmemTiledCopyQKV g2s;
          auto g2s_thr = g2s.get_thread_slice(tidx);
          sm80::load_tile(g2s, g2s_thr.partition_S(gQ), g2s_thr.partition_D(sQ),
                          g2s_thr.partition_S(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{})),
                          seqlen_q - m_block * kBlockM);
          cutlass::arch::cpasync_barrier_arrive_noinc(&bars.q);
        };
        auto kv = [&](bool is_k, int n, PipelineState const& state, Pipeline& pipe) {
          Tensor dst = stage_kv(is_k ? smem.k(state.index()) : smem.v(state.index()));
          auto load = sm80::kv_tile_loader<Traits, kVarlen>(p, is_k ? p.k : p.v, seq, coord, dst);
          if (range.needs_mask(n)) load(n, cute::false_type{});
          else load(n, cute::true_type{});
          cutlass::arch::cpasync_barrier_arrive_noinc(pipe.producer_get_barrier(state));
        };
        return std::make_pair(q, kv);
      }
    }();

    // Q has one buffer. A block's first tile loads it first; a later tile loads its first K tile (a free stage
    // the consumers may not reach for a while) and then waits for them to be done with the Q before.
    const bool later_tile = kPersistent && st.tiles > 0;
    if (issuer && !later_tile) load_q();
#pragma unroll 1
    for (int n = range.end - 1; n >= range.begin; --n) {
      if (issuer) {
        pipe_k.producer_acquire(state);
        load_kv(true, n, state, pipe_k);
      }
      if (later_tile && n == range.end - 1) {
        cutlass::arch::ClusterBarrier::wait(&bars.q_free, (st.tiles - 1) & 1);
        if (issuer) load_q();
      }
      if constexpr (ScoreModT::kStaged) {
        // Every key tile's bias tile, masked ones included (init_from_tile reads them all).
        if (issuer) {
          pipe_bias.producer_acquire(state_bias);
          BiasTile::load(p.bias_tile, pipe_bias.producer_get_barrier(state_bias), smem.bias(state_bias.index()),
                         m_block * kBlockM, n * kBlockN, coord.head_q_first, coord.batch);
        }
        ++state_bias;
      }
      if (issuer) {
        pipe_v.producer_acquire(state);
        load_kv(false, n, state, pipe_v);
      }
      ++state;
    }
    if constexpr (kPersistent) ++st.tiles;
  }

  // ---- consumer warpgroups -------------------------------------------------------------------------------
  // Walks the key tiles of `range`, folding each into acc_o and the softmax statistics. thread: the index
  // among the consumer threads; `st` and kPersistent as in load().
  template <bool kPersistent, class Params, class ScoreModT, class TensorO, class TensorC, class Softmax>
  static __device__ __forceinline__ void mma(Params const& p, TileRange const& range, ScoreModT const& score_mod,
                                             TensorO& acc_o, TensorC const& coord_rc, Softmax& softmax,
                                             Smem const& smem, int thread, ConsumerState& st) {
    using namespace cute;
    constexpr int kNRows = decltype(size<0>(coord_rc))::value;
    Barriers& bars = smem.barriers();
    Pipeline pipe_k = make_pipeline<Pipeline>(bars.k, false), pipe_v = make_pipeline<Pipeline>(bars.v, false);
    BiasPipeline pipe_bias = bias_pipeline(p, bars);
    PipelineState& state_k = st.k;
    PipelineState& state_v = st.v;
    typename BiasPipeline::PipelineState& state_bias = st.bias;

    typename Traits::TiledMmaQK mma_qk;
    typename Traits::TiledMmaPV mma_pv;
    auto thr_qk = mma_qk.get_thread_slice(thread);
    auto thr_pv = mma_pv.get_thread_slice(thread);
    Tensor sQ = make_tensor(make_smem_ptr(smem.q()), typename Traits::SmemLayoutQ{});
    Tensor tSrQ = thr_qk.partition_fragment_A(sQ);  // smem descriptors
    auto k_of = [&](int stage) SDPA_INLINE_LAMBDA {
      return thr_qk.partition_fragment_B(make_tensor(make_smem_ptr(smem.k(stage)), typename Traits::SmemLayoutKV{}));
    };
    auto vt_of = [&](int stage) SDPA_INLINE_LAMBDA {
      return thr_pv.partition_fragment_B(make_tensor(make_smem_ptr(smem.v(stage)), typename Traits::SmemLayoutVt{}));
    };
    Tensor acc_o_rc = acc_rowcol(acc_o);
    Tensor acc_s = partition_fragment_C(mma_qk, Shape<Int<kBlockM>, Int<kBlockN>>{});
    Tensor s = acc_rowcol(acc_s);
    // P of the tile before (walk order), as the A operand of its P V: issued with the next Q K^T.
    Tensor rP = make_tensor<Element>(acc_s.layout());
    Tensor tOrP = make_tensor(rP.data(), acc_as_a_operand(rP.layout()));
    float correction[kNRows];

    cutlass::arch::ClusterBarrier::wait(&bars.q, kPersistent ? st.tiles & 1 : 0);
    scheduler_init();

    // The staged form starts the accumulator at the bias tile's values (ScoreMod::init_from_tile), before the
    // warpgroup takes its turn at the tensor cores: the stage is then free again before Q K^T is even issued.
    auto init_from_bias = [&]() SDPA_INLINE_LAMBDA {
      if constexpr (ScoreModT::kStaged) {
        pipe_bias.consumer_wait(state_bias);
        score_mod.template init_from_tile<Element, BiasTile>(
            acc_s, coord_rc, p, static_cast<uint32_t>(__cvta_generic_to_shared(smem.bias(state_bias.index()))));
        pipe_bias.consumer_release(state_bias);
        ++state_bias;
      }
    };
    // S = Q K^T of tile n issued (not waited for), from the stage state_k points at.
    auto issue_qk = [&](int n) SDPA_INLINE_LAMBDA {
      // The split form starts the accumulator at its column parts, the staged form at its values
      // (init_from_bias); the others let wgmma zero it.
      if constexpr (ScoreModT::kSplit) score_mod.init(acc_s, coord_rc, p, n * kBlockN);
      constexpr bool kZeroInit = !ScoreModT::kSplit && !ScoreModT::kStaged;
      pipe_k.consumer_wait(state_k);
      gemm<kZeroInit, /*kRegisterA=*/false, /*kWait=*/false>(mma_qk, tSrQ, k_of(state_k.index()), acc_s);
    };
    // O += P V of the tile before, issued (not waited for).
    auto issue_pv = [&]() SDPA_INLINE_LAMBDA {
      Softmax::rescale(acc_o_rc, correction);
      pipe_v.consumer_wait(state_v);
      gemm</*kZeroInit=*/false, /*kRegisterA=*/true, /*kWait=*/false>(mma_pv, tOrP, vt_of(state_v.index()), acc_o);
    };
    // Once Q K^T of tile n has landed (wgmma groups other than the last `pending` are done): bias, softmax
    // statistics and P.
    auto finish_scores = [&](int n, auto masked, auto pending) SDPA_INLINE_LAMBDA {
      warpgroup_wait<decltype(pending)::value>();
      warpgroup_fence_operand(acc_s);
      pipe_k.consumer_release(state_k);
      ++state_k;
      if constexpr (ScoreModT::kStaged) {
        if constexpr (decltype(masked)::value) score_mod.apply_mask(s, coord_rc, p, n * kBlockN);
      } else {
        score_mod.template apply<decltype(masked)::value, Element, kBlockN>(s, coord_rc, p, n * kBlockN, nullptr);
      }
      softmax.update_scores(s, p.softmax_c, correction);
    };
    auto release_v = [&]() SDPA_INLINE_LAMBDA {
      warpgroup_wait<0>();
      warpgroup_fence_operand(acc_o);
      warpgroup_fence_operand(rP);  // P V has read P: the next P may be written
      pipe_v.consumer_release(state_v);
      ++state_v;
    };

    // First tile: Q K^T alone.
    int n = range.end - 1;
    init_from_bias();
    scheduler_sync();
    issue_qk(n);
    scheduler_arrive(false);
    if (range.needs_mask(n)) finish_scores(n, cute::true_type{}, cute::Int<0>{});
    else finish_scores(n, cute::false_type{}, cute::Int<0>{});
    sm80::convert_fragment_into(acc_s, rP);

    auto step = [&](int n, auto masked) SDPA_INLINE_LAMBDA {
      init_from_bias();
      scheduler_sync();
      issue_qk(n);
      issue_pv();
      scheduler_arrive(false);
      finish_scores(n, masked, cute::Int<1>{});
      release_v();
      sm80::convert_fragment_into(acc_s, rP);
    };
    --n;
    while (n >= range.begin) {
      for (; n >= range.begin && range.needs_mask(n); --n) step(n, cute::true_type{});
      for (; n >= range.begin && !range.needs_mask(n); --n) step(n, cute::false_type{});
    }

    // Last P V.
    scheduler_sync();
    issue_pv();
    scheduler_arrive(true);
    release_v();
    if constexpr (kPersistent) {
      // Every GEMM of the tile has completed (release_v waited for them): the producer may replace Q.
      cutlass::arch::ClusterBarrier::arrive(&bars.q_free);
      ++st.tiles;
    }
  }

 private:
  // Ping-pong between the consumer warpgroups, in a ring (one named barrier of 256 threads per warpgroup):
  // warpgroup w issues its GEMMs only after warpgroup w - 1 has issued its own, so one computes softmax while
  // the others' GEMMs run. The last warpgroup opens the first one's barrier once at the start and skips its
  // own last arrive, which balances every barrier's syncs and arrives.
  static constexpr int kSchedulerThreads = 2 * 128;
  static constexpr int kNWarpgroups = Traits::kNWarpgroups;
  static __device__ __forceinline__ int consumer_warpgroup() {
    return (threadIdx.x - Traits::kNProducerThreads) / 128;
  }
  static __device__ __forceinline__ void scheduler_init() {
    if (consumer_warpgroup() == kNWarpgroups - 1) {
      cutlass::arch::NamedBarrier::arrive(kSchedulerThreads, kSchedulerBarrier0);
    }
  }
  static __device__ __forceinline__ void scheduler_sync() {
    cutlass::arch::NamedBarrier::sync(kSchedulerThreads, kSchedulerBarrier0 + consumer_warpgroup());
  }
  static __device__ __forceinline__ void scheduler_arrive(bool last) {
    const int wg = consumer_warpgroup();
    if (last && wg == kNWarpgroups - 1) return;
    const int next = wg + 1 == kNWarpgroups ? 0 : wg + 1;
    cutlass::arch::NamedBarrier::arrive(kSchedulerThreads, kSchedulerBarrier0 + next);
  }
  static constexpr int kSchedulerBarrier0 = 0;  // NamedBarrier adds the ids CUTLASS reserves (__syncthreads' 0)
};

}  // namespace sm90
}  // namespace sdpa
