// The sm80 backward mainloop: one block holds K and V of one key block and walks (query head, query
// block) steps, recomputing P through the forward's ScoreMod and softmax constant, and accumulating dK and
// dV in registers. dQ of each step goes to the fp32 accumulators with atomics.
//
// Per step: S = Q K^T -> P = exp(x - lse); dP = dO V^T -> dS = P (dP - rowsum(dO O)); P and dS go through
// smem (the dK/dV products read them transposed); dV += P^T dO, dK += dS^T Q, dQ += dS K.
#pragma once

#include <cute/tensor.hpp>
#include <math_constants.h>

#include "common/block_coord.hpp"
#include "common/bwd_block.cuh"
#include "common/bwd_step.cuh"
#include "common/params_bwd.hpp"
#include "common/score_mod.cuh"
#include "common/tile_range.hpp"
#include "sm80/bwd_loads_sm80.cuh"
#include "sm80/gemm_sm80.cuh"
#include "softmax.cuh"

namespace sdpa {
namespace sm80 {

template <class Traits>
struct MainloopBwdSm80 {
  using Element = typename Traits::Element;
  static constexpr int kBlockM = Traits::kBlockM;
  static constexpr int kBlockN = Traits::kBlockN;
  static constexpr int kHeadDim = Traits::kHeadDim;
  static constexpr int kQStages = Traits::kQStages;

  using Smem = BwdSmem<Traits>;

  // Runs every (query head of the group, query block of `range`) step for key block n_block of kv head
  // coord.head_kv, adding into acc_dk (unscaled: the caller applies the softmax scale) and acc_dv. With
  // kAtomicDq each step also adds its dQ to the fp32 accumulators; without, a dQ kernel computes it.
  template <class Bias, BiasForm kForm, bool kAtomicDq, class Params, class TensorDK, class TensorDV>
  static __device__ __forceinline__ void run(Params const& p, BlockCoord const& coord, int n_block,
                                             TileRange const& range, TensorDK& acc_dk, TensorDV& acc_dv,
                                             char* smem_base) {
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
    Tensor sKtNoSwizzle = make_tensor(make_smem_ptr(smem.k), typename Traits::SmemLayoutKtNoSwizzle{});
    Tensor sP = make_tensor(make_smem_ptr(smem.p), typename Traits::SmemLayoutPdS{});
    Tensor sPt = make_tensor(make_smem_ptr(smem.p), typename Traits::SmemLayoutPdSt{});
    Tensor sdS = make_tensor(make_smem_ptr(smem.ds), typename Traits::SmemLayoutPdS{});
    Tensor sdSt = make_tensor(make_smem_ptr(smem.ds), typename Traits::SmemLayoutPdSt{});
    Tensor sPdStNoSwizzle = make_tensor(make_smem_ptr(smem.p), typename Traits::SmemLayoutPdStNoSwizzle{});
    auto sQ = [&](int stage) { return make_tensor(make_smem_ptr(smem.q_stage(stage)), typename Traits::SmemLayoutQdO{}); };
    auto sQt = [&](int stage) {
      return make_tensor(make_smem_ptr(smem.q_stage(stage)), typename Traits::SmemLayoutQdOt{});
    };
    auto sdO = [&](int stage) {
      return make_tensor(make_smem_ptr(smem.d_o_stage(stage)), typename Traits::SmemLayoutQdO{});
    };
    auto sdOt = [&](int stage) {
      return make_tensor(make_smem_ptr(smem.d_o_stage(stage)), typename Traits::SmemLayoutQdOt{});
    };
    Tensor sQdOtNoSwizzle = make_tensor(make_smem_ptr(smem.q), typename Traits::SmemLayoutQdOtNoSwizzle{});

    // Global -> shared: K and V once, then Q and dO of each step (rows past the sequence read as zeros).
    const BwdLoads<Traits> loads(tidx, b);
    auto load_q_do = [&](int step, int stage) {
      loads.q(p.q, walk.head(step), walk.m_block(step), p.seqlen_q, sQ(stage));
      loads.q(p.grad_o, walk.head(step), walk.m_block(step), p.seqlen_q, sdO(stage));
    };

    // The five products' operand fragments and smem -> register copies.
    typename Traits::TiledMmaSdP mma_sdp;
    typename Traits::TiledMmadKV mma_dkv;
    typename Traits::TiledMmadQ mma_dq;
    auto thr_sdp = mma_sdp.get_thread_slice(tidx);
    auto thr_dkv = mma_dkv.get_thread_slice(tidx);
    auto thr_dq = mma_dq.get_thread_slice(tidx);
    Tensor tSrQ = thr_sdp.partition_fragment_A(sQ(0));
    Tensor tSrK = thr_sdp.partition_fragment_B(sK);
    Tensor tdPrdO = thr_sdp.partition_fragment_A(sdO(0));
    Tensor tdPrV = thr_sdp.partition_fragment_B(sV);
    Tensor tdKVrPdSt = thr_dkv.partition_fragment_A(sPdStNoSwizzle);  // P^T for dV, dS^T for dK
    Tensor tdKVrQdOt = thr_dkv.partition_fragment_B(sQdOtNoSwizzle);  // dO^T for dV, Q^T for dK
    Tensor tdQrdS = thr_dq.partition_fragment_A(sdS);
    Tensor tdQrKt = thr_dq.partition_fragment_B(sKtNoSwizzle);

    auto s2r_sdp_a = make_tiled_copy_A(typename Traits::SmemCopyAtom{}, mma_sdp);
    auto s2r_sdp_a_thr = s2r_sdp_a.get_thread_slice(tidx);
    auto s2r_sdp_b = make_tiled_copy_B(typename Traits::SmemCopyAtom{}, mma_sdp);
    auto s2r_sdp_b_thr = s2r_sdp_b.get_thread_slice(tidx);
    auto s2r_dkv_a = make_tiled_copy_A(typename Traits::SmemCopyAtomTransposed{}, mma_dkv);
    auto s2r_dkv_a_thr = s2r_dkv_a.get_thread_slice(tidx);
    auto s2r_dkv_b = make_tiled_copy_B(typename Traits::SmemCopyAtomTransposed{}, mma_dkv);
    auto s2r_dkv_b_thr = s2r_dkv_b.get_thread_slice(tidx);
    auto s2r_dq_a = make_tiled_copy_A(typename Traits::SmemCopyAtom{}, mma_dq);
    auto s2r_dq_a_thr = s2r_dq_a.get_thread_slice(tidx);
    auto s2r_dq_b = make_tiled_copy_B(typename Traits::SmemCopyAtomTransposed{}, mma_dq);
    auto s2r_dq_b_thr = s2r_dq_b.get_thread_slice(tidx);
    Tensor tSsK = s2r_sdp_b_thr.partition_S(sK);
    Tensor tdPsV = s2r_sdp_b_thr.partition_S(sV);
    Tensor tdVsPt = s2r_dkv_a_thr.partition_S(sPt);
    Tensor tdKsdSt = s2r_dkv_a_thr.partition_S(sdSt);
    Tensor tdQsdS = s2r_dq_a_thr.partition_S(sdS);
    Tensor tdQsKt = s2r_dq_b_thr.partition_S(sKt);

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
    cp_async_fence();

    auto step = [&](int t, auto masked) {
      const int stage = kQStages == 1 ? 0 : t % 2;
      const int head = walk.head(t), m_block = walk.m_block(t);
      const int row0 = m_block * kBlockM;
      const BlockCoord head_coord{b, coord.head_kv, head, 1, p.seqlen_q, p.seqlen_kv};
      const ScoreMod<Bias, kForm> score_mod{Bias(p.bias, head_coord, head), row0, p.seqlen_q, p.seqlen_kv};

      const int64_t row_base = (int64_t(b) * p.heads_q + head);
      float lse_c[kNRows], dpsum[kNRows];
      load_row_stats(p, score_mod, coord_rc, row_base, row0, lse_c, dpsum);

      cp_async_wait<0>();
      __syncthreads();  // Q(t), dO(t) landed; every warp is done with step t - 1's smem
      if constexpr (kQStages > 1) {
        if (t + 1 < steps) load_q_do(t + 1, stage ^ 1);
        cp_async_fence();
      }

      Tensor acc_s = partition_fragment_C(mma_sdp, Shape<Int<kBlockM>, Int<kBlockN>>{});
      score_mod.init(acc_s, coord_rc, p, col0);
      gemm_ss(acc_s, tSrQ, tSrK, s2r_sdp_a_thr.partition_S(sQ(stage)), tSsK, mma_sdp, s2r_sdp_a, s2r_sdp_a_thr,
              s2r_sdp_b, s2r_sdp_b_thr);
      Tensor s = acc_rowcol(acc_s);
      score_mod.template apply<decltype(masked)::value, Element, kBlockN>(s, coord_rc, p, col0, nullptr);
      recompute_p(s, lse_c, p.softmax_c);

      Tensor acc_dp = partition_fragment_C(mma_sdp, Shape<Int<kBlockM>, Int<kBlockN>>{});
      clear(acc_dp);
      gemm_ss(acc_dp, tdPrdO, tdPrV, s2r_sdp_a_thr.partition_S(sdO(stage)), tdPsV, mma_sdp, s2r_sdp_a,
              s2r_sdp_a_thr, s2r_sdp_b, s2r_sdp_b_thr);
      Tensor dp = acc_rowcol(acc_dp);
      ds_from_dp(dp, s, dpsum);
      if constexpr (Bias::kKind == BiasKind::kDense) {
        // A block that ends past the sequence, or rows that 16-byte stores cannot reach, store from registers.
        if (p.grad_bias.data != nullptr && (partial_n || !p.grad_bias_rows_aligned)) {
          store_bias_grad<Element>(p, dp, coord_rc, b, head, row0, col0);
        }
      }
      copy(r2s, r2s_thr.retile_S(convert_fragment<Element>(acc_s)), tPsP);
      copy(r2s, r2s_thr.retile_S(convert_fragment<Element>(acc_dp)), tdSsdS);
      __syncthreads();  // P and dS visible to every warp
      if constexpr (Bias::kKind == BiasKind::kDense) {
        if (p.grad_bias.data != nullptr && !partial_n && p.grad_bias_rows_aligned) {
          store_bias_grad_tile<Element, kBlockM, kBlockN, typename Traits::Base::GmemTiledCopyO>(
              p, sdS, b, head, m_block, n_block);
        }
      }

      gemm_ss(acc_dv, tdKVrPdSt, tdKVrQdOt, tdVsPt, s2r_dkv_b_thr.partition_S(sdOt(stage)), mma_dkv, s2r_dkv_a,
              s2r_dkv_a_thr, s2r_dkv_b, s2r_dkv_b_thr);
      gemm_ss(acc_dk, tdKVrPdSt, tdKVrQdOt, tdKsdSt, s2r_dkv_b_thr.partition_S(sQt(stage)), mma_dkv, s2r_dkv_a,
              s2r_dkv_a_thr, s2r_dkv_b, s2r_dkv_b_thr);
      if constexpr (kQStages == 1) {
        __syncthreads();  // every warp is done reading Q and dO
        if (t + 1 < steps) load_q_do(t + 1, 0);
        cp_async_fence();
      }

      if constexpr (kAtomicDq) {
        Tensor acc_dq = partition_fragment_C(mma_dq, Shape<Int<kBlockM>, Int<kHeadDim>>{});
        clear(acc_dq);
        gemm_ss(acc_dq, tdQrdS, tdQrKt, tdQsdS, tdQsKt, mma_dq, s2r_dq_a, s2r_dq_a_thr, s2r_dq_b, s2r_dq_b_thr);
        // Padded rows: the accumulators cover whole query blocks, so no predicate (their dS is 0).
        Tensor g_dq = make_tensor(make_gmem_ptr(p.dq_accum + (row_base * p.seqlen_q_padded + row0) * kHeadDim),
                                  Shape<Int<kBlockM>, Int<kHeadDim>>{}, Stride<Int<kHeadDim>, _1>{});
        Tensor t_dq = thr_dq.partition_C(g_dq);
#pragma unroll
        for (int i = 0; i < size(acc_dq); ++i) atomicAdd(&t_dq(i), acc_dq(i));
      }
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

}  // namespace sm80
}  // namespace sdpa
