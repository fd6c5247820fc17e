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
#include "common/params_bwd.hpp"
#include "common/score_mod.cuh"
#include "common/tile_range.hpp"
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

  // Shared memory, in this order: K, V, kQStages x Q, kQStages x dO, P, dS.
  struct Smem {
    Element* k;
    Element* v;
    Element* q;
    Element* d_o;
    Element* p;
    Element* ds;
    explicit __device__ Smem(char* base) {
      k = reinterpret_cast<Element*>(base);
      v = k + Traits::kSmemKVElems;
      q = v + Traits::kSmemKVElems;
      d_o = q + kQStages * Traits::kSmemQdOElems;
      p = d_o + kQStages * Traits::kSmemQdOElems;
      ds = p + Traits::kSmemPdSElems;
    }
  };

  // Runs every (query head of the group, query block of `range`) step for key block n_block of kv head
  // coord.head_kv, adding into acc_dk (unscaled) and acc_dv, and each step's dQ into the fp32 accumulators.
  template <class Bias, BiasForm kForm, bool kAtomicDq, class Params, class TensorDK, class TensorDV>
  static __device__ __forceinline__ void run(Params const& p, BlockCoord const& coord, int n_block,
                                             TileRange const& range, TensorDK& acc_dk, TensorDV& acc_dv,
                                             char* smem_base) {
    using namespace cute;
    static_assert(kAtomicDq, "the deterministic backward (dQ without atomics) is the sm80 family's");
    constexpr bool kSplit = kForm == BiasForm::kSplit;
    constexpr float kLog2e = 1.4426950408889634f;
    const int tidx = threadIdx.x;
    const int b = coord.batch;
    const int group = p.group_size;
    const int steps_per_head = range.end - range.begin;
    const int steps = group * steps_per_head;
    const int col0 = n_block * kBlockN;
    // The last key block may end past the sequence: every one of its tiles masks those columns.
    const bool partial_n = col0 + kBlockN > p.seqlen_kv;
    const Smem smem(smem_base);

    Tensor sK = make_tensor(make_smem_ptr(smem.k), typename Traits::SmemLayoutKV{});
    Tensor sV = make_tensor(make_smem_ptr(smem.v), typename Traits::SmemLayoutKV{});
    Tensor sKt = make_tensor(make_smem_ptr(smem.k), typename Traits::SmemLayoutKt{});
    Tensor sP = make_tensor(make_smem_ptr(smem.p), typename Traits::SmemLayoutPdS{});
    Tensor sPt = make_tensor(make_smem_ptr(smem.p), typename Traits::SmemLayoutPdSt{});
    Tensor sdS = make_tensor(make_smem_ptr(smem.ds), typename Traits::SmemLayoutPdS{});
    Tensor sdSt = make_tensor(make_smem_ptr(smem.ds), typename Traits::SmemLayoutPdSt{});
    auto stage_of = [](Element* base, int stage) { return make_smem_ptr(base + stage * Traits::kSmemQdOElems); };

    // Global -> shared: K and V once, then Q and dO of each step (rows past the sequence read as zeros).
    typename Traits::GmemTiledCopy g2s;
    auto g2s_thr = g2s.get_thread_slice(tidx);
    Tensor cKV = g2s_thr.partition_S(make_identity_tensor(Shape<Int<kBlockN>, Int<kHeadDim>>{}));
    Tensor cQ = g2s_thr.partition_S(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));
    auto kv_tile = [&](TensorView const& view) {
      return local_tile(sm80::head_matrix<kHeadDim>(static_cast<const Element*>(view.data),
                                                    b * view.stride_batch + coord.head_kv * view.stride_head,
                                                    view.stride_seq, p.seqlen_kv),
                        Shape<Int<kBlockN>, Int<kHeadDim>>{}, make_coord(n_block, 0));
    };
    auto q_tile = [&](TensorView const& view, int head, int m_block) {
      return local_tile(sm80::head_matrix<kHeadDim>(static_cast<const Element*>(view.data),
                                                    b * view.stride_batch + head * view.stride_head,
                                                    view.stride_seq, p.seqlen_q),
                        Shape<Int<kBlockM>, Int<kHeadDim>>{}, make_coord(m_block, 0));
    };
    auto head_of = [&](int step) { return coord.head_kv * group + step / steps_per_head; };
    auto m_block_of = [&](int step) { return range.begin + step % steps_per_head; };
    auto load_q_do = [&](int step, int stage) {
      const int head = head_of(step), m_block = m_block_of(step);
      const int rows_left = p.seqlen_q - m_block * kBlockM;
      sm80::load_tile(g2s, g2s_thr.partition_S(q_tile(p.q, head, m_block)),
                      g2s_thr.partition_D(make_tensor(stage_of(smem.q, stage), typename Traits::SmemLayoutQdO{})),
                      cQ, rows_left);
      sm80::load_tile(g2s, g2s_thr.partition_S(q_tile(p.grad_o, head, m_block)),
                      g2s_thr.partition_D(make_tensor(stage_of(smem.d_o, stage), typename Traits::SmemLayoutQdO{})),
                      cQ, rows_left);
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

    sm80::load_tile(g2s, g2s_thr.partition_S(kv_tile(p.k)), g2s_thr.partition_D(sK), cKV, p.seqlen_kv - col0);
    sm80::load_tile(g2s, g2s_thr.partition_S(kv_tile(p.v)), g2s_thr.partition_D(sV), cKV, p.seqlen_kv - col0);
    load_q_do(0, 0);
    cute::cp_async_fence();

    auto step = [&](int t, auto masked) {
      const int stage = t % 2;
      const int head = head_of(t), m_block = m_block_of(t);
      const int row0 = m_block * kBlockM;
      const BlockCoord head_coord{b, coord.head_kv, head, 1, p.seqlen_q, p.seqlen_kv};
      const ScoreMod<Bias, kForm> score_mod{Bias(p.bias, head_coord, head), row0, p.seqlen_q, p.seqlen_kv};

      // Per-row statistics of this step: the LSE (as this form's scores see it) and rowsum(dO O).
      const int64_t row_base = (int64_t(b) * p.heads_q + head);
      float lse[kNRows], dpsum[kNRows];
#pragma unroll
      for (int r = 0; r < kNRows; ++r) {
        const int i = row0 + get<0>(coord_rc(r, 0));
        lse[r] = i < p.seqlen_q ? p.lse[row_base * p.seqlen_q + i] : -CUDART_INF_F;
        dpsum[r] = p.dpsum[row_base * p.seqlen_q_padded + i];
      }
      score_mod.unadjust_lse(lse, coord_rc);

      cute::cp_async_wait<0>();
      cutlass::arch::fence_view_async_shared();  // cp.async wrote through the generic proxy; wgmma reads async
      __syncthreads();  // Q(t), dO(t) landed; both warpgroups are done with step t - 1's tiles
      if (t + 1 < steps) load_q_do(t + 1, stage ^ 1);
      cute::cp_async_fence();

      Tensor sQ = make_tensor(stage_of(smem.q, stage), typename Traits::SmemLayoutQdO{});
      Tensor sdO = make_tensor(stage_of(smem.d_o, stage), typename Traits::SmemLayoutQdO{});
      Tensor sQt = make_tensor(stage_of(smem.q, stage), typename Traits::SmemLayoutQdOt{});
      Tensor sdOt = make_tensor(stage_of(smem.d_o, stage), typename Traits::SmemLayoutQdOt{});

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
#pragma unroll
      for (int r = 0; r < kNRows; ++r) {
        // A row that kept no key (lse -inf) or lies past the sequence recomputes P = 0, never inf or NaN.
        const float lse_c = lse[r] == -CUDART_INF_F ? CUDART_INF_F : lse[r] * kLog2e;
#pragma unroll
        for (int k = 0; k < size<1>(s); ++k) s(r, k) = fast_exp2(fmaf(s(r, k), p.softmax_c, -lse_c));
      }
      warpgroup_wait<0>();
      warpgroup_fence_operand(acc_dp);
      Tensor dp = acc_rowcol(acc_dp);
#pragma unroll
      for (int r = 0; r < kNRows; ++r) {
#pragma unroll
        for (int k = 0; k < size<1>(dp); ++k) dp(r, k) = s(r, k) * (dp(r, k) - dpsum[r]);
      }
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
      if (partial_n || range.needs_mask(m_block_of(t))) {
        step(t, cute::true_type{});
      } else {
        step(t, cute::false_type{});
      }
    }
  }
};

}  // namespace sm90
}  // namespace sdpa
