// Compile-time shape of the sm90 backward kernel: tile sizes, the three wgmma tilings and the shared-memory
// layouts (with the transposed views the dK/dV/dQ products read through their descriptors).
//
// One block owns kBlockN keys of one kv head and walks kBlockM query rows per step, as the sm80 backward
// (sm80/kernel_traits_bwd_sm80.cuh) does. Two warpgroups, each the owner of half the keys:
//   S  = Q K^T, dP = dO V^T          (kBlockM x kBlockN)  warpgroup w: key columns [64w, 64w + 64)
//   dV += P^T dO, dK += dS^T Q       (kBlockN x kHeadDim) warpgroup w: the same keys, as rows
//   dQ  = dS K                       (kBlockM x kHeadDim) warpgroup w: head-dim columns [w D/2, (w+1) D/2)
// Every operand is read from shared memory (wgmma's SS form): P and dS are stored there once, and wgmma
// reads a tile as K-major or MN-major through the same bytes, so no product needs a register transpose.
#pragma once

#include <cute/tensor.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/arch/mma_sm90.hpp>
#include <cutlass/numeric_types.h>

namespace sdpa {

template <class Element_, int kHeadDim_>
struct KernelTraitsBwdSm90 {
  using Element = Element_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = 64;
  static constexpr int kBlockN = 128;
  static constexpr int kNWarpgroups = 2;
  static constexpr int kNThreads = kNWarpgroups * 128;
  static constexpr int kQStages = 2;  // Q and dO of the next step load while this one computes
  // dK and dV stay in registers (64 x kHeadDim fp32 each per warpgroup: kHeadDim registers per thread for
  // both), and dQ's columns split in halves of whole 64-element swizzle atoms: hd128 only. hd64 and hd256
  // keep the sm80 backward.
  static_assert(kHeadDim == 128, "the sm90 backward is tiled for head dim 128");

  using TiledMmaSdP = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<Element, Element, float,
                                 cute::Shape<cute::_64, cute::Int<kBlockN / kNWarpgroups>, cute::Int<kHeadDim>>>(),
      cute::Layout<cute::Shape<cute::_1, cute::Int<kNWarpgroups>, cute::_1>>{}));
  using TiledMmadKV = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<Element, Element, float, cute::Shape<cute::_64, cute::Int<kHeadDim>, cute::Int<kBlockM>>,
                                 cute::GMMA::Major::MN, cute::GMMA::Major::MN>(),
      cute::Layout<cute::Shape<cute::Int<kNWarpgroups>, cute::_1, cute::_1>>{}));
  using TiledMmadQ = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<Element, Element, float,
                                 cute::Shape<cute::_64, cute::Int<kHeadDim / kNWarpgroups>, cute::Int<kBlockN>>,
                                 cute::GMMA::Major::K, cute::GMMA::Major::MN>(),
      cute::Layout<cute::Shape<cute::_1, cute::Int<kNWarpgroups>, cute::_1>>{}));

  // Every tile is stored (rows, cols) with cols contiguous in 128-byte swizzled rows (wgmma's K-major
  // layout); Transposed<> is the (cols, rows) view of the same bytes, which wgmma reads as MN-major.
  using SmemLayoutAtom = cute::GMMA::Layout_K_SW128_Atom<Element>;
  template <int kRows, int kCols>
  using SmemLayout = decltype(cute::tile_to_shape(SmemLayoutAtom{}, cute::Shape<cute::Int<kRows>, cute::Int<kCols>>{}));
  template <class Layout, int kRows, int kCols>
  using Transposed = decltype(cute::composition(
      Layout{}, cute::make_ordered_layout(cute::Shape<cute::Int<kCols>, cute::Int<kRows>>{},
                                          cute::Step<cute::_2, cute::_1>{})));

  using SmemLayoutQdO = SmemLayout<kBlockM, kHeadDim>;
  using SmemLayoutQdOt = Transposed<SmemLayoutQdO, kBlockM, kHeadDim>;  // (kHeadDim, kBlockM)
  using SmemLayoutKV = SmemLayout<kBlockN, kHeadDim>;
  using SmemLayoutKt = Transposed<SmemLayoutKV, kBlockN, kHeadDim>;     // (kHeadDim, kBlockN)
  using SmemLayoutPdS = SmemLayout<kBlockM, kBlockN>;
  using SmemLayoutPdSt = Transposed<SmemLayoutPdS, kBlockM, kBlockN>;  // (kBlockN, kBlockM)

  static constexpr int kSmemQdOElems = int(cute::cosize_v<SmemLayoutQdO>);
  static constexpr int kSmemKVElems = int(cute::cosize_v<SmemLayoutKV>);
  static constexpr int kSmemPdSElems = int(cute::cosize_v<SmemLayoutPdS>);
  // K, V, kQStages x (Q, dO), P, dS: every tile a multiple of the 1024-byte swizzle pattern.
  static constexpr int kSmemBytes =
      int(sizeof(Element)) * (2 * kSmemKVElems + 2 * kQStages * kSmemQdOElems + 2 * kSmemPdSElems);

  // Global <-> shared in 16-byte vectors, 8 threads per 64-element row of a swizzle atom: cp.async loads of
  // K, V, Q and dO (zero-filled past the sequence) and the bias gradient's tile stores.
  static constexpr int kGmemElemsPerVec = 16 / int(sizeof(Element));
  static constexpr int kGmemThreadsPerRow = 64 / kGmemElemsPerVec;
  using GmemThreadLayout = cute::Layout<cute::Shape<cute::Int<kNThreads / kGmemThreadsPerRow>, cute::Int<kGmemThreadsPerRow>>,
                                        cute::Stride<cute::Int<kGmemThreadsPerRow>, cute::_1>>;
  using GmemValLayout = cute::Layout<cute::Shape<cute::_1, cute::Int<kGmemElemsPerVec>>>;
  using GmemTiledCopy = decltype(cute::make_tiled_copy(
      cute::Copy_Atom<cute::SM80_CP_ASYNC_CACHEGLOBAL_ZFILL<cute::uint128_t>, Element>{}, GmemThreadLayout{},
      GmemValLayout{}));
  using GmemTiledCopyStore = decltype(cute::make_tiled_copy(
      cute::Copy_Atom<cute::UniversalCopy<cute::uint128_t>, Element>{}, GmemThreadLayout{}, GmemValLayout{}));
  // Registers -> shared for P and dS, in the score tiling (pairs of neighbouring columns).
  using SmemCopyAtomPdS = cute::Copy_Atom<cute::AutoVectorizingCopyWithAssumedAlignment<32>, Element>;
};

}  // namespace sdpa
