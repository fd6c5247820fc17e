// The backward's dK/dV kernel, generic over the arch's mainloop: one block per (key block, kv head, batch)
// keeps dK and dV of its keys in registers while Mainloop::run walks the query blocks its bias lets it see
// (q_tiles), for every query head of the group; with kAtomicDq each step also adds its dQ into the fp32
// accumulators. The bias reaches the backward only through the same ScoreMod as the forward.
//
// Traits: the family's kernel traits (kBlockM, kBlockN, kHeadDim, kNThreads, TiledMmadKV, Element).
#pragma once

#include <cute/tensor.hpp>

#include "common/block_coord.hpp"
#include "common/bwd_block.cuh"
#include "common/params_bwd.hpp"
#include "common/tile_range.hpp"

namespace sdpa {

template <class Traits, class Mainloop, class Bias, BiasForm kForm, bool kAtomicDq>
__global__ void __launch_bounds__(Traits::kNThreads, 1)
    flash_bwd_dkdv_kernel(const __grid_constant__ BwdParams<typename Bias::Params> p) {
  using namespace cute;
  using Element = typename Traits::Element;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kHeadDim = Traits::kHeadDim;
  const int n_block = blockIdx.x;
  const BlockCoord coord{static_cast<int>(blockIdx.z), static_cast<int>(blockIdx.y),
                         static_cast<int>(blockIdx.y) * p.group_size, p.group_size, p.seqlen_q, p.seqlen_kv};
  const TileRange range = Bias::q_tiles(PositionSpan::of_block(n_block, kBlockN, p.seqlen_kv), Traits::kBlockM,
                                        p.seqlen_q, p.seqlen_kv);

  typename Traits::TiledMmadKV mma_dkv;
  Tensor acc_dk = partition_fragment_C(mma_dkv, Shape<Int<kBlockN>, Int<kHeadDim>>{});
  Tensor acc_dv = partition_fragment_C(mma_dkv, Shape<Int<kBlockN>, Int<kHeadDim>>{});
  clear(acc_dk);
  clear(acc_dv);
  extern __shared__ __align__(1024) char smem_bwd[];  // wgmma's 128-byte swizzle wants 1024-byte tiles
  // Keys no query sees (e.g. upper-left causal with Sq < Skv) get zero gradients.
  if (!range.empty()) {
    Mainloop::template run<Bias, kForm, kAtomicDq>(p, coord, n_block, range, acc_dk, acc_dv, smem_bwd);
  }

  if constexpr (Bias::kKind == BiasKind::kDense) {
    if (p.grad_bias.data != nullptr) zero_bias_grad_outside<Element, Traits::kBlockM, kBlockN>(p, coord, n_block, range);
  }

  store_dk_dv<Element, kBlockN, kHeadDim>(p, coord, n_block, mma_dkv, acc_dk, acc_dv);
}

}  // namespace sdpa
