// The sm90 backward mainloop: the sm80 backward's walk (one block holds K and V of one key block and walks
// (query head, query block) steps, recomputing P through the forward's ScoreMod, dK and dV in registers, dQ
// by fp32 atomics) with every product on wgmma, reading its operands from shared memory.
//
// Per step, with both warpgroups in lockstep:
//   Q(t), dO(t) landed -> S = Q K^T and dP = dO V^T issued together; P = exp(x - lse) while dP computes;
//   dS = P (dP - rowsum(dO O)); P and dS to smem -> dQ = dS K, dV += P^T dO, dK += dS^T Q issued together;
//   dQ added to the fp32 accumulators (two floats per atomic) while dV and dK compute.
// The loads of step t + 1 (cp.async, as the sm80 kernel's) run under step t's products.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>
#include <math_constants.h>

#include "common/block_coord.hpp"
#include "common/bwd_block.cuh"
#include "common/bwd_step.cuh"
#include "common/params_bwd.hpp"
#include "common/score_mod.cuh"
#include "common/tile_range.hpp"
#include "sm80/bwd_loads_sm80.cuh"
#include "sm80/gemm_sm80.cuh"
#include "sm90/gemm_sm90.cuh"
#include "softmax.cuh"

namespace sdpa {
namespace sm90 {

template <class Traits>
struct MainloopBwdSm90 {
  using Element = typename Traits::Element;
  static constexpr int kBlockM = Traits::kBlockM;
  static constexpr int kBlockN = Traits::kBlockN;
  static constexpr int kHeadDim = Traits::kHeadDim;
  static constexpr int kQStages = Traits::kQStages;
  static_assert(kQStages == 2, "the step walk alternates two Q/dO stages");

  using Smem = BwdSmem<Traits>;

  // Runs every (query head of the group, query block of `range`) step for key block n_block of kv head
  // coord.head_kv, adding into acc_dk (unscaled) and acc_dv, and each step's dQ into the fp32 accumulators.
  template <class Bias, BiasForm kForm, bool kAtomicDq, class Params, class TensorDK, class TensorDV>
  static __device__ __forceinline__ void run(Params const& p, BlockCoord const& coord, int n_block,
                                             TileRange const& range, TensorDK& acc_dk, TensorDV& acc_dv,
                                             char* smem_base) {
    using namespace cute;
    static_assert(kAtomicDq, "the deterministic backward (dQ without atomics) is the sm80 family's");
    constexpr bool kSplit = kForm == BiasForm::kSplit;
    const int tidx = threadIdx.x;
    const int b = coord.batch;
    const BwdWalk walk(p, coord, range, n_block, kBlockN);
    const int steps = walk.steps();
    const int col0 = walk.col0;
    const bool partial_n = walk.partial_n;
    const Smem smem(smem_base);

    Tensor sK = make_tensor(make_smem_ptr(smem.k), typename Traits::SmemLayoutKV{});
    Tensor sV = make_tensor(make_smem_ptr(smem.v), typename Traits::SmemLayoutKV{});
    Tensor sKt = make_tensor(make_smem_ptr(smem.k), typename Traits::SmemLayoutKt{});
    Tensor sP = make_tensor(make_smem_ptr(smem.p), typename Traits::SmemLayoutPdS{});
    Tensor sPt = make_tensor(make_smem_ptr(smem.p), typename Traits::SmemLayoutPdSt{});
    Tensor sdS = make_tensor(make_smem_ptr(smem.ds), typename Traits::SmemLayoutPdS{});
    Tensor sdSt = make_tensor(make_smem_ptr(smem.ds), typename Traits::SmemLayoutPdSt{});
    const sm80::BwdLoads<Traits> loads(tidx, b);
    auto qdo_tile = [](Element* base) { return make_tensor(make_smem_ptr(base), typename Traits::SmemLayoutQdO{}); };
    auto load_q_do = [&](int step, int stage) {
      loads.q(p.q, walk.head(step), walk.m_block(step), p.seqlen_q, qdo_tile(smem.q_stage(stage)));
      loads.q(p.grad_o, walk.head(step), walk.m_block(step), p.seqlen_q, qdo_tile(smem.d_o_stage(stage)));
    };

    // The products' shared-memory descriptors: fixed ones here, those of the Q/dO stage per step.
    typename Traits::TiledMmaSdP mma_sdp;
    typename Traits::TiledMmadKV mma_dkv;
    typename Traits::TiledMmadQ mma_dq;
    auto thr_sdp = mma_sdp.get_thread_slice(tidx);
    auto thr_dkv = mma_dkv.get_thread_slice(tidx);
    auto thr_dq = mma_dq.get_thread_slice(tidx);
    Tensor tSrK = thr_sdp.partition_fragment_B(sK);
    Tensor tdPrV = thr_sdp.partition_fragment_B(sV);
    Tensor tdVrPt = thr_dkv.partition_fragment_A(sPt);
    Tensor tdKrdSt = thr_dkv.partition_fragment_A(sdSt);
    Tensor tdQrdS = thr_dq.partition_fragment_A(sdS);
    Tensor tdQrKt = thr_dq.partition_fragment_B(sKt);

    // Register -> shared for P and dS, in the score tiling.
    auto r2s = make_tiled_copy_C(typename Traits::SmemCopyAtomPdS{}, mma_sdp);
    auto r2s_thr = r2s.get_thread_slice(tidx);
    Tensor tPsP = r2s_thr.partition_D(sP);
    Tensor tdSsdS = r2s_thr.partition_D(sdS);

    // (row, col) inside the score tile of each score this thread holds.
    Tensor coord_rc = acc_rowcol(thr_sdp.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{})));
    constexpr int kNRows = decltype(size<0>(coord_rc))::value;

    loads.kv(p.k, coord.head_kv, n_block, p.seqlen_kv, sK);
    loads.kv(p.v, coord.head_kv, n_block, p.seqlen_kv, sV);
    load_q_do(0, 0);
    cute::cp_async_fence();

    auto step = [&](int t, auto masked) {
      const int stage = t % 2;
      const int head = walk.head(t), m_block = walk.m_block(t);
      const int row0 = m_block * kBlockM;
      const BlockCoord head_coord{b, coord.head_kv, head, 1, p.seqlen_q, p.seqlen_kv};
      const ScoreMod<Bias, kForm> score_mod{Bias(p.bias, head_coord, head), row0, p.seqlen_q, p.seqlen_kv};

      const int64_t row_base = (int64_t(b) * p.heads_q + head);
      float lse_c[kNRows], dpsum[kNRows];
      load_row_stats(p, score_mod, coord_rc, row_base, row0, lse_c, dpsum);

      cute::cp_async_wait<0>();
      cutlass::arch::fence_view_async_shared();  // cp.async wrote through the generic proxy; wgmma reads async
      __syncthreads();  // Q(t), dO(t) landed; both warpgroups are done with step t - 1's tiles
      if (t + 1 < steps) load_q_do(t + 1, stage ^ 1);
      cute::cp_async_fence();

      Tensor sQ = qdo_tile(smem.q_stage(stage));
      Tensor sdO = qdo_tile(smem.d_o_stage(stage));
      Tensor sQt = make_tensor(make_smem_ptr(smem.q_stage(stage)), typename Traits::SmemLayoutQdOt{});
      Tensor sdOt = make_tensor(make_smem_ptr(smem.d_o_stage(stage)), typename Traits::SmemLayoutQdOt{});

      // S and dP issued back to back; P is computed while dP is still on the tensor cores.
      Tensor acc_s = partition_fragment_C(mma_sdp, Shape<Int<kBlockM>, Int<kBlockN>>{});
      if constexpr (kSplit) score_mod.init(acc_s, coord_rc, p, col0);
      gemm</*kZeroInit=*/!kSplit, /*kRegisterA=*/false, /*kWait=*/false>(mma_sdp, thr_sdp.partition_fragment_A(sQ),
                                                                         tSrK, acc_s);
      Tensor acc_dp = partition_fragment_C(mma_sdp, Shape<Int<kBlockM>, Int<kBlockN>>{});
      gemm<true, false, false>(mma_sdp, thr_sdp.partition_fragment_A(sdO), tdPrV, acc_dp);
      warpgroup_wait<1>();
      warpgroup_fence_operand(acc_s);
      Tensor s = acc_rowcol(acc_s);
      score_mod.template apply<decltype(masked)::value, Element, kBlockN>(s, coord_rc, p, col0, nullptr);
      recompute_p(s, lse_c, p.softmax_c);
      warpgroup_wait<0>();
      warpgroup_fence_operand(acc_dp);
      Tensor dp = acc_rowcol(acc_dp);
      ds_from_dp(dp, s, dpsum);
      if constexpr (Bias::kKind == BiasKind::kDense) {
        // A block that ends past the sequence, or rows that 16-byte stores cannot reach, store from registers.
        if (p.grad_bias.data != nullptr && (partial_n || !p.grad_bias_rows_aligned)) {
          store_bias_grad<Element>(p, dp, coord_rc, b, head, row0, col0);
        }
      }
      copy(r2s, r2s_thr.retile_S(sm80::convert_fragment<Element>(acc_s)), tPsP);
      copy(r2s, r2s_thr.retile_S(sm80::convert_fragment<Element>(acc_dp)), tdSsdS);
      cutlass::arch::fence_view_async_shared();  // the stores are generic-proxy writes; wgmma reads async
      __syncthreads();  // P and dS of both warpgroups visible (dQ reads every key column)
      if constexpr (Bias::kKind == BiasKind::kDense) {
        if (p.grad_bias.data != nullptr && !partial_n && p.grad_bias_rows_aligned) {
          store_bias_grad_tile<Element, kBlockM, kBlockN, typename Traits::GmemTiledCopyStore>(p, sdS, b, head,
                                                                                              m_block, n_block);
        }
      }

      // dQ first: its atomics then run while dV and dK are still on the tensor cores.
      Tensor acc_dq = partition_fragment_C(mma_dq, Shape<Int<kBlockM>, Int<kHeadDim>>{});
      gemm<true, false, false>(mma_dq, tdQrdS, tdQrKt, acc_dq);
      gemm<false, false, false>(mma_dkv, tdVrPt, thr_dkv.partition_fragment_B(sdOt), acc_dv);
      gemm<false, false, false>(mma_dkv, tdKrdSt, thr_dkv.partition_fragment_B(sQt), acc_dk);
      warpgroup_wait<2>();
      warpgroup_fence_operand(acc_dq);

      // Padded rows: the accumulators cover whole query blocks, so no predicate (their dS is 0). wgmma's
      // accumulator holds neighbouring columns in pairs: one 8-byte atomic per pair.
      Tensor g_dq = make_tensor(make_gmem_ptr(p.dq_accum + (row_base * p.seqlen_q_padded + row0) * kHeadDim),
                                Shape<Int<kBlockM>, Int<kHeadDim>>{}, Stride<Int<kHeadDim>, _1>{});
      Tensor t_dq = thr_dq.partition_C(g_dq);
      static_assert(decltype(size<0, 0>(t_dq))::value == 2 && decltype(stride<0, 0>(t_dq))::value == 1,
                    "wgmma's accumulator pairs are neighbouring columns");
#pragma unroll
      for (int i = 0; i < size(acc_dq); i += 2) {
        atomicAdd(reinterpret_cast<float2*>(&t_dq(i)), make_float2(acc_dq(i), acc_dq(i + 1)));
      }
      warpgroup_wait<0>();  // dV and dK are done with this step's Q, dO, P and dS before anything overwrites them
      warpgroup_fence_operand(acc_dv);
      warpgroup_fence_operand(acc_dk);
    };

    for (int t = 0; t < steps; ++t) {
      if (partial_n || range.needs_mask(walk.m_block(t))) {
        step(t, cute::true_type{});
      } else {
        step(t, cute::false_type{});
      }
    }
  }
};

}  // namespace sm90
}  // namespace sdpa
