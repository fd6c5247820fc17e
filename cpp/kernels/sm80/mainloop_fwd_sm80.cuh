// The sm80 forward mainloop: Q once, then K and V tile by tile through cp.async into single smem buffers,
// S = Q K^T and O += P V on mma.sync, with the bias applied through a ScoreMod and the online softmax.
#pragma once

#include <cute/tensor.hpp>

#include "common/block_coord.hpp"
#include "common/seq_info.hpp"
#include "common/tile_range.hpp"
#include "sm80/gemm_sm80.cuh"
#include "sm80/kv_loads_sm80.cuh"
#include "softmax.cuh"

namespace sdpa {
namespace sm80 {

// kVarlen: the block's sequence comes from a variable-length batch (SeqInfo), its keys packed or paged.
template <class Traits, bool kVarlen>
struct MainloopFwdSm80 {
  using Element = typename Traits::Element;
  static constexpr int kBlockM = Traits::kBlockM;
  static constexpr int kBlockN = Traits::kBlockN;
  static constexpr int kHeadDim = Traits::kHeadDim;

  // Walks the key tiles of `range` for query block m_block of the block at `coord` (its sequence laid out
  // as `seq` says), folding each into acc_o and the softmax statistics. smem holds Q, K, V and (staged form)
  // the bias tile; Q's buffer is free again when this returns, for the epilogue.
  template <class Params, class ScoreModT, class TensorO, class TensorC, class Softmax>
  static __device__ __forceinline__ void run(Params const& p, SeqInfo const& seq, BlockCoord const& coord,
                                             int m_block, TileRange const& range, ScoreModT const& score_mod,
                                             TensorO& acc_o, TensorC const& coord_rc, Softmax& softmax, char* smem) {
    typename Traits::TiledMma mma;
    const int b = coord.batch;
    const int h = coord.head_q_first;
    const int tidx = threadIdx.x;
    const int seqlen_q = coord.seqlen_q;

    Element* smem_q = reinterpret_cast<Element*>(smem);
    Tensor sQ = make_tensor(make_smem_ptr(smem_q), typename Traits::SmemLayoutQ{});
    Tensor sK = make_tensor(make_smem_ptr(smem_q + Traits::kSmemQElems), typename Traits::SmemLayoutKV{});
    Element* smem_v = smem_q + Traits::kSmemQElems + Traits::kSmemKVElems;
    Tensor sV = make_tensor(make_smem_ptr(smem_v), typename Traits::SmemLayoutKV{});
    Tensor sVt = make_tensor(make_smem_ptr(smem_v), typename Traits::SmemLayoutVt{});
    Tensor sVtNoSwizzle = make_tensor(make_smem_ptr(smem_v), typename Traits::SmemLayoutVtNoSwizzle{});
    char* smem_bias = reinterpret_cast<char*>(smem_v + Traits::kSmemKVElems);  // staged form only

    Tensor gQ = local_tile(head_matrix<kHeadDim>(static_cast<const Element*>(p.q.data), seq.q_offset(p.q, b, h, 0),
                                                 p.q.stride_seq, seqlen_q),
                           Shape<Int<kBlockM>, Int<kHeadDim>>{}, make_coord(m_block, 0));
    typename Traits::GmemTiledCopyQKV g2s;
    auto g2s_thr = g2s.get_thread_slice(tidx);
    Tensor tQgQ = g2s_thr.partition_S(gQ);
    Tensor tQsQ = g2s_thr.partition_D(sQ);
    Tensor tQcQ = g2s_thr.partition_S(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));
    auto load_k = kv_tile_loader<Traits, kVarlen>(p, p.k, seq, coord, sK);
    auto load_v = kv_tile_loader<Traits, kVarlen>(p, p.v, seq, coord, sV);
    auto stage_bias = [&](int n) {
      score_mod.template stage<Element, kBlockM, kBlockN, Traits::kNThreads>(smem_bias, range, n, seqlen_q, tidx);
    };

    auto thr_mma = mma.get_thread_slice(tidx);
    Tensor tSrQ = thr_mma.partition_fragment_A(sQ);
    Tensor tSrK = thr_mma.partition_fragment_B(sK);
    Tensor tOrVt = thr_mma.partition_fragment_B(sVtNoSwizzle);
    Tensor acc_o_rc = acc_rowcol(acc_o);

    auto s2r_q = make_tiled_copy_A(typename Traits::SmemCopyAtom{}, mma);
    auto s2r_q_thr = s2r_q.get_thread_slice(tidx);
    Tensor tSsQ = s2r_q_thr.partition_S(sQ);
    auto s2r_k = make_tiled_copy_B(typename Traits::SmemCopyAtom{}, mma);
    auto s2r_k_thr = s2r_k.get_thread_slice(tidx);
    Tensor tSsK = s2r_k_thr.partition_S(sK);
    auto s2r_v = make_tiled_copy_B(typename Traits::SmemCopyAtomTransposed{}, mma);
    auto s2r_v_thr = s2r_v.get_thread_slice(tidx);
    Tensor tOsVt = s2r_v_thr.partition_S(sVt);

    load_tile(g2s, tQgQ, tQsQ, tQcQ, seqlen_q - m_block * kBlockM);
    load_k(range.end - 1, cute::false_type{});
    stage_bias(range.end - 1);
    cp_async_fence();

    // One key tile: V's load overlaps Q K^T, and the next K's load overlaps softmax and P V.
    auto step = [&](int n, auto masked) {
      Tensor acc_s = partition_fragment_C(mma, Shape<Int<kBlockM>, Int<kBlockN>>{});
      Tensor s = acc_rowcol(acc_s);
      score_mod.init(acc_s, coord_rc, p, n * kBlockN);
      cp_async_wait<0>();
      __syncthreads();  // K(n) has landed, and every warp is done reading V(n + 1)
      // An unmasked tile is full by the TileRange contract; only masked ones need row predicates.
      load_v(n, cute::bool_constant<!decltype(masked)::value>{});
      cp_async_fence();
      gemm_ss(acc_s, tSrQ, tSrK, tSsQ, tSsK, mma, s2r_q, s2r_q_thr, s2r_k, s2r_k_thr);

      score_mod.template apply<decltype(masked)::value, Element, kBlockN>(s, coord_rc, p, n * kBlockN, smem_bias);

      cp_async_wait<0>();
      __syncthreads();  // V(n) has landed, and every warp is done reading K(n)
      if (n > range.begin) {
        // n - 1 < end - 1 <= the last key tile, the only one that can be partial.
        load_k(n - 1, cute::true_type{});
        stage_bias(n - 1);  // every warp is past apply(n), so the staged tile is free
        cp_async_fence();
      }
      softmax.update(s, acc_o_rc, p.softmax_c);

      Tensor rP = convert_fragment<Element>(acc_s);
      Tensor tOrP = make_tensor(rP.data(), acc_as_a_operand(rP.layout()));
      gemm_rs(acc_o, tOrP, tOrVt, tOsVt, mma, s2r_v, s2r_v_thr);
    };

    // Last tile first: causal diagonals and the partial last tile sit at the end of the range, so the walk
    // starts with the masked tiles and then settles into a loop with no mask code at all. Separate loops
    // (rather than a per-tile branch) keep the compiler from merging the two paths into predicated code.
    int n = range.end - 1;
    while (n >= range.begin) {
      for (; n >= range.begin && range.needs_mask(n); --n) step(n, cute::true_type{});
      for (; n >= range.begin && !range.needs_mask(n); --n) step(n, cute::false_type{});
    }
  }
};

}  // namespace sm80
}  // namespace sdpa
