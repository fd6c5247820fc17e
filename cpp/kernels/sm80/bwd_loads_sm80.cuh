// The backward's cp.async tile loads, shared by both backward families (the sm90 one keeps cp.async): K and V
// of the block's key block once, Q and dO of each (query head, query block) step, and the deterministic dQ
// kernel's tiles. Rows past the sequence are zero-filled, never read.
#pragma once

#include <cute/tensor.hpp>

#include "sdpa/problem.hpp"
#include "sm80/gemm_sm80.cuh"

namespace sdpa {
namespace sm80 {

// Traits: kBlockM, kBlockN, kHeadDim, Element and GmemTiledCopy (16-byte cp.async over the block's threads).
template <class Traits>
struct BwdLoads {
  using Element = typename Traits::Element;
  using GmemTiledCopy = typename Traits::GmemTiledCopy;
  static constexpr int kHeadDim = Traits::kHeadDim;

  GmemTiledCopy g2s;
  decltype(GmemTiledCopy{}.get_thread_slice(0)) thr;
  int batch;

  __device__ BwdLoads(int tidx, int batch) : thr(g2s.get_thread_slice(tidx)), batch(batch) {}

  // Key block n_block of kv head `head` of K or V.
  template <class TensorD>
  __device__ __forceinline__ void kv(TensorView const& view, int head, int n_block, int seqlen_kv, TensorD&& dst) const {
    load<Traits::kBlockN>(view, head, n_block, seqlen_kv, dst);
  }
  // Query block m_block of query head `head` of Q or dO.
  template <class TensorD>
  __device__ __forceinline__ void q(TensorView const& view, int head, int m_block, int seqlen_q, TensorD&& dst) const {
    load<Traits::kBlockM>(view, head, m_block, seqlen_q, dst);
  }

 private:
  template <int kRows, class TensorD>
  __device__ __forceinline__ void load(TensorView const& view, int head, int block, int seqlen, TensorD& dst) const {
    Tensor src = local_tile(head_matrix<kHeadDim>(static_cast<const Element*>(view.data),
                                                  batch * view.stride_batch + head * view.stride_head,
                                                  view.stride_seq, seqlen),
                            Shape<Int<kRows>, Int<kHeadDim>>{}, make_coord(block, 0));
    load_tile(g2s, thr.partition_S(src), thr.partition_D(dst),
              thr.partition_S(make_identity_tensor(Shape<Int<kRows>, Int<kHeadDim>>{})), seqlen - block * kRows);
  }
};

}  // namespace sm80
}  // namespace sdpa
