// Deterministic dQ for the sm80 backward: one block per (query block, query head, batch) walks the key
// tiles its bias lets it see (kv_tiles, as in the forward) and sums dQ = scale * sum_n dS_n K_n in
// registers, in a fixed order, with no atomics. It recomputes S, P, dP and dS that the dK/dV kernel also
// computes (three extra products per tile), which is what bitwise reproducibility costs.
#pragma once

#include <cute/tensor.hpp>
#include <math_constants.h>

#include "common/block_coord.hpp"
#include "common/bwd_step.cuh"
#include "common/params_bwd.hpp"
#include "common/score_mod.cuh"
#include "common/tile_range.hpp"
#include "sm80/bwd_loads_sm80.cuh"
#include "sm80/gemm_sm80.cuh"
#include "sm80/kernel_traits_bwd_sm80.cuh"
#include "softmax.cuh"

namespace sdpa {

// Grid (query blocks, query heads, batch). Shared memory: Q, dO, K, V, dS (the dQ product reads dS in
// its own tiling, so it goes through smem).
template <class Traits>
constexpr int bwd_dq_smem_bytes() {
  return int(sizeof(typename Traits::Element)) *
         (2 * Traits::kSmemQdOElems + 2 * Traits::kSmemKVElems + Traits::kSmemPdSElems);
}

template <class Traits, class Bias, BiasForm kForm>
__global__ void __launch_bounds__(Traits::kNThreads, 1)
    flash_bwd_dq_kernel_sm80(const __grid_constant__ BwdParams<typename Bias::Params> p) {
  using namespace cute;
  using namespace sm80;
  using Element = typename Traits::Element;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kHeadDim = Traits::kHeadDim;
  const int m_block = blockIdx.x, head = blockIdx.y, b = blockIdx.z;
  const int tidx = threadIdx.x;
  const int row0 = m_block * kBlockM;
  const BlockCoord coord{b, head / p.group_size, head, 1, p.seqlen_q, p.seqlen_kv};
  const TileRange range = Bias::kv_tiles(PositionSpan::of_block(m_block, kBlockM, p.seqlen_q), kBlockN,
                                         p.seqlen_q, p.seqlen_kv);
  const ScoreMod<Bias, kForm> score_mod{Bias(p.bias, coord, head), row0, p.seqlen_q, p.seqlen_kv};

  extern __shared__ __align__(128) char smem_raw[];
  Element* smem = reinterpret_cast<Element*>(smem_raw);
  Tensor sQ = make_tensor(make_smem_ptr(smem), typename Traits::SmemLayoutQdO{});
  Tensor sdO = make_tensor(make_smem_ptr(smem + Traits::kSmemQdOElems), typename Traits::SmemLayoutQdO{});
  Element* smem_k = smem + 2 * Traits::kSmemQdOElems;
  Tensor sK = make_tensor(make_smem_ptr(smem_k), typename Traits::SmemLayoutKV{});
  Tensor sKt = make_tensor(make_smem_ptr(smem_k), typename Traits::SmemLayoutKt{});
  Tensor sKtNoSwizzle = make_tensor(make_smem_ptr(smem_k), typename Traits::SmemLayoutKtNoSwizzle{});
  Tensor sV = make_tensor(make_smem_ptr(smem_k + Traits::kSmemKVElems), typename Traits::SmemLayoutKV{});
  Tensor sdS = make_tensor(make_smem_ptr(smem_k + 2 * Traits::kSmemKVElems), typename Traits::SmemLayoutPdS{});

  const BwdLoads<Traits> loads(tidx, b);

  typename Traits::TiledMmaSdP mma_sdp;
  typename Traits::TiledMmadQ mma_dq;
  auto thr_sdp = mma_sdp.get_thread_slice(tidx);
  auto thr_dq = mma_dq.get_thread_slice(tidx);
  Tensor tSrQ = thr_sdp.partition_fragment_A(sQ);
  Tensor tSrK = thr_sdp.partition_fragment_B(sK);
  Tensor tdPrdO = thr_sdp.partition_fragment_A(sdO);
  Tensor tdPrV = thr_sdp.partition_fragment_B(sV);
  Tensor tdQrdS = thr_dq.partition_fragment_A(sdS);
  Tensor tdQrKt = thr_dq.partition_fragment_B(sKtNoSwizzle);
  auto s2r_a = make_tiled_copy_A(typename Traits::SmemCopyAtom{}, mma_sdp);
  auto s2r_a_thr = s2r_a.get_thread_slice(tidx);
  auto s2r_b = make_tiled_copy_B(typename Traits::SmemCopyAtom{}, mma_sdp);
  auto s2r_b_thr = s2r_b.get_thread_slice(tidx);
  auto s2r_dq_a = make_tiled_copy_A(typename Traits::SmemCopyAtom{}, mma_dq);
  auto s2r_dq_a_thr = s2r_dq_a.get_thread_slice(tidx);
  auto s2r_dq_b = make_tiled_copy_B(typename Traits::SmemCopyAtomTransposed{}, mma_dq);
  auto s2r_dq_b_thr = s2r_dq_b.get_thread_slice(tidx);
  auto r2s = make_tiled_copy_C(typename Traits::SmemCopyAtomPdS{}, mma_sdp);
  auto r2s_thr = r2s.get_thread_slice(tidx);
  Tensor coord_rc = acc_rowcol(thr_sdp.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{})));
  constexpr int kNRows = decltype(size<0>(coord_rc))::value;

  Tensor acc_dq = partition_fragment_C(mma_dq, Shape<Int<kBlockM>, Int<kHeadDim>>{});
  clear(acc_dq);
  const int64_t row_base = int64_t(b) * p.heads_q + head;
  float lse_c[kNRows], dpsum[kNRows];
  load_row_stats(p, score_mod, coord_rc, row_base, row0, lse_c, dpsum);

  const int q_rows_left = p.seqlen_q - row0;
  loads.q(p.q, head, m_block, p.seqlen_q, sQ);
  loads.q(p.grad_o, head, m_block, p.seqlen_q, sdO);

  auto step = [&](int n, auto masked) {
    const int col0 = n * kBlockN;
    __syncthreads();  // every warp is done with the previous tile's K, V and dS
    loads.kv(p.k, coord.head_kv, n, p.seqlen_kv, sK);
    loads.kv(p.v, coord.head_kv, n, p.seqlen_kv, sV);
    cp_async_fence();
    cp_async_wait<0>();
    __syncthreads();

    Tensor acc_s = partition_fragment_C(mma_sdp, Shape<Int<kBlockM>, Int<kBlockN>>{});
    score_mod.init(acc_s, coord_rc, p, col0);
    gemm_ss(acc_s, tSrQ, tSrK, s2r_a_thr.partition_S(sQ), s2r_b_thr.partition_S(sK), mma_sdp, s2r_a, s2r_a_thr,
            s2r_b, s2r_b_thr);
    Tensor s = acc_rowcol(acc_s);
    score_mod.template apply<decltype(masked)::value, Element, kBlockN>(s, coord_rc, p, col0, nullptr);
    Tensor acc_dp = partition_fragment_C(mma_sdp, Shape<Int<kBlockM>, Int<kBlockN>>{});
    clear(acc_dp);
    gemm_ss(acc_dp, tdPrdO, tdPrV, s2r_a_thr.partition_S(sdO), s2r_b_thr.partition_S(sV), mma_sdp, s2r_a,
            s2r_a_thr, s2r_b, s2r_b_thr);
    Tensor dp = acc_rowcol(acc_dp);
    recompute_p(s, lse_c, p.softmax_c);
    ds_from_dp(dp, s, dpsum);
    copy(r2s, r2s_thr.retile_S(convert_fragment<Element>(acc_dp)), r2s_thr.partition_D(sdS));
    __syncthreads();
    gemm_ss(acc_dq, tdQrdS, tdQrKt, s2r_dq_a_thr.partition_S(sdS), s2r_dq_b_thr.partition_S(sKt), mma_dq, s2r_dq_a,
            s2r_dq_a_thr, s2r_dq_b, s2r_dq_b_thr);
  };
  for (int n = range.begin; n < range.end; ++n) {
    if (range.needs_mask(n)) {
      step(n, cute::true_type{});
    } else {
      step(n, cute::false_type{});
    }
  }

  // dQ = scale * acc, rows inside the sequence only.
  Tensor g_dq = local_tile(head_matrix<kHeadDim>(static_cast<Element*>(const_cast<void*>(p.grad_q.data)),
                                                 b * p.grad_q.stride_batch + head * p.grad_q.stride_head,
                                                 p.grad_q.stride_seq, p.seqlen_q),
                           Shape<Int<kBlockM>, Int<kHeadDim>>{}, make_coord(m_block, 0));
  Tensor t_dq = thr_dq.partition_C(g_dq);
  Tensor c_dq = thr_dq.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));
#pragma unroll
  for (int i = 0; i < size(acc_dq); ++i) acc_dq(i) *= p.scale;
  Tensor r_dq = convert_fragment<Element>(acc_dq);
#pragma unroll
  for (int i = 0; i < size(r_dq); ++i) {
    if (get<0>(c_dq(i)) < q_rows_left) t_dq(i) = r_dq(i);
  }
}

}  // namespace sdpa
