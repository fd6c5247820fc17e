// The sm90 forward mainloop: Q once, then K and V tile by tile through cp.async into single smem buffers
// (the sm80 mainloop's pipeline: V's load overlaps Q K^T, the next K's load overlaps softmax and P V), with
// both GEMMs on wgmma: S = Q K^T from shared memory, O += P V with P in the registers that held S.
//
// The first Hopper step of issue 9: wgmma without TMA, warp specialization or softmax/GEMM overlap.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>

#include "common/block_coord.hpp"
#include "common/seq_info.hpp"
#include "common/tile_range.hpp"
#include "sm80/gemm_sm80.cuh"  // head_matrix, load_tile, convert_fragment: cp.async and conversions, any arch
#include "sm80/kv_loads_sm80.cuh"
#include "sm90/gemm_sm90.cuh"
#include "softmax.cuh"

namespace sdpa {
namespace sm90 {

template <class Traits, bool kVarlen>
struct MainloopFwdSm90 {
  using Element = typename Traits::Element;
  static constexpr int kBlockM = Traits::kBlockM;
  static constexpr int kBlockN = Traits::kBlockN;
  static constexpr int kHeadDim = Traits::kHeadDim;

  // cp.async writes shared memory through the generic proxy and wgmma reads it through the async proxy:
  // each thread's landed copies are made visible to wgmma before the barrier that publishes them.
  static __device__ __forceinline__ void publish_copies() {
    cute::cp_async_wait<0>();
    cutlass::arch::fence_view_async_shared();
    __syncthreads();
  }

  // Walks the key tiles of `range` for query block m_block (its sequence laid out as `seq` says), folding
  // each into acc_o and the softmax statistics.
  template <class Params, class ScoreModT, class TensorO, class TensorC, class Softmax>
  static __device__ __forceinline__ void run(Params const& p, SeqInfo const& seq, BlockCoord const& coord,
                                             int m_block, TileRange const& range, ScoreModT const& score_mod,
                                             TensorO& acc_o, TensorC const& coord_rc, Softmax& softmax, char* smem) {
    using namespace cute;
    const int b = coord.batch, h = coord.head_q_first;
    const int tidx = threadIdx.x;
    const int seqlen_q = coord.seqlen_q;

    Element* smem_q = reinterpret_cast<Element*>(smem);
    Element* smem_k = smem_q + Traits::kSmemQElems;
    Element* smem_v = smem_k + Traits::kSmemKVElems;
    Tensor sQ = make_tensor(make_smem_ptr(smem_q), typename Traits::SmemLayoutQ{});
    Tensor sK = make_tensor(make_smem_ptr(smem_k), typename Traits::SmemLayoutKV{});
    Tensor sV = make_tensor(make_smem_ptr(smem_v), typename Traits::SmemLayoutKV{});
    Tensor sVt = make_tensor(make_smem_ptr(smem_v), typename Traits::SmemLayoutVt{});
    char* smem_bias = reinterpret_cast<char*>(smem_v + Traits::kSmemKVElems);  // staged form only

    Tensor gQ = local_tile(sm80::head_matrix<kHeadDim>(static_cast<const Element*>(p.q.data),
                                                       seq.q_offset(p.q, b, h, 0), p.q.stride_seq, seqlen_q),
                           Shape<Int<kBlockM>, Int<kHeadDim>>{}, make_coord(m_block, 0));
    auto load_k = sm80::kv_tile_loader<Traits, kVarlen>(p, p.k, seq, coord, sK);
    auto load_v = sm80::kv_tile_loader<Traits, kVarlen>(p, p.v, seq, coord, sV);
    auto stage_bias = [&](int n) {
      score_mod.template stage<Element, kBlockM, kBlockN, Traits::kNThreads>(smem_bias, range, n, seqlen_q, tidx);
    };

    typename Traits::TiledMmaQK mma_qk;
    typename Traits::TiledMmaPV mma_pv;
    auto thr_qk = mma_qk.get_thread_slice(tidx);
    auto thr_pv = mma_pv.get_thread_slice(tidx);
    Tensor tSrQ = thr_qk.partition_fragment_A(sQ);   // smem descriptors
    Tensor tSrK = thr_qk.partition_fragment_B(sK);
    Tensor tOrVt = thr_pv.partition_fragment_B(sVt);
    Tensor acc_o_rc = acc_rowcol(acc_o);

    typename Traits::GmemTiledCopyQKV g2s;
    auto g2s_thr = g2s.get_thread_slice(tidx);
    sm80::load_tile(g2s, g2s_thr.partition_S(gQ), g2s_thr.partition_D(sQ),
                    g2s_thr.partition_S(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{})),
                    seqlen_q - m_block * kBlockM);
    load_k(range.end - 1, cute::false_type{});
    stage_bias(range.end - 1);
    cp_async_fence();

    auto step = [&](int n, auto masked) {
      Tensor acc_s = partition_fragment_C(mma_qk, Shape<Int<kBlockM>, Int<kBlockN>>{});
      Tensor s = acc_rowcol(acc_s);
      score_mod.init(acc_s, coord_rc, p, n * kBlockN);
      publish_copies();  // K(n) (and Q) have landed, and every warp is done reading V(n + 1)
      load_v(n, cute::bool_constant<!decltype(masked)::value>{});
      cp_async_fence();
      gemm</*kZeroInit=*/false, /*kRegisterA=*/false>(mma_qk, tSrQ, tSrK, acc_s);

      score_mod.template apply<decltype(masked)::value, Element, kBlockN>(s, coord_rc, p, n * kBlockN, smem_bias);

      publish_copies();  // V(n) has landed, and every warp is done reading K(n)
      if (n > range.begin) {
        load_k(n - 1, cute::true_type{});
        stage_bias(n - 1);
        cp_async_fence();
      }
      softmax.update(s, acc_o_rc, p.softmax_c);

      Tensor rP = sm80::convert_fragment<Element>(acc_s);
      Tensor tOrP = make_tensor(rP.data(), acc_as_a_operand(rP.layout()));
      gemm</*kZeroInit=*/false, /*kRegisterA=*/true>(mma_pv, tOrP, tOrVt, acc_o);
    };

    // Last tile first, masked tiles in their own loop, as in the sm80 mainloop.
    int n = range.end - 1;
    while (n >= range.begin) {
      for (; n >= range.begin && range.needs_mask(n); --n) step(n, cute::true_type{});
      for (; n >= range.begin && !range.needs_mask(n); --n) step(n, cute::false_type{});
    }
  }
};

}  // namespace sm90
}  // namespace sdpa
