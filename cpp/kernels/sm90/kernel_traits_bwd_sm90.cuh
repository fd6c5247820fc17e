// Compile-time shape of the sm90 backward kernel: tile sizes, the three wgmma tilings and the shared-memory
// layouts (with the transposed views the dK/dV/dQ products read through their descriptors).
//
// One block owns kBlockN keys of one kv head and walks kBlockM query rows per step, as the sm80 backward
// (sm80/kernel_traits_bwd_sm80.cuh) does. Two warpgroups share each of the five products:
//   S  = Q K^T, dP = dO V^T          (kBlockM x kBlockN)   tiling SdP
//   dV += P^T dO, dK += dS^T Q       (kBlockN x kHeadDim)  tiling dKV
//   dQ  = dS K                       (kBlockM x kHeadDim)  tiling dQ
// Every operand is read from shared memory (wgmma's SS form): P and dS are stored there once, and wgmma
// reads a tile as K-major or MN-major through the same bytes, so no product needs a register transpose.
#pragma once

#include <type_traits>

#include <cute/tensor.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/arch/mma_sm90.hpp>
#include <cutlass/numeric_types.h>

namespace sdpa {

// Tiles and the warpgroup split of each product, (along M, along N), per head dim. wgmma's M is 64 per
// warpgroup. dK and dV live in registers for the whole block (kBlockN x kHeadDim fp32 each over 256
// threads), which sets kBlockN: 128 up to hd128, 64 at hd256, where dK/dV split the head dim instead.
//   hd64, hd128: 64 query rows per step; S/dP split by keys (64 each), dK/dV by keys, dQ by head dim.
//   hd256: 64 query rows, 64 keys; S/dP by keys (32 each), dK/dV and dQ by head dim (128 each).
// (hd64 with 128 query rows, each warpgroup owning 64 of them, spilled ~600 bytes: S and dP at 64
// registers each.)
template <int kHeadDim>
struct TileConfigBwdSm90 {
  static constexpr int kBlockM = 64, kBlockN = 128;
  static constexpr int kSdPM = 1, kSdPN = 2, kdKVM = 2, kdKVN = 1, kdQM = 1, kdQN = 2;
};
template <>
struct TileConfigBwdSm90<256> {
  static constexpr int kBlockM = 64, kBlockN = 64;
  static constexpr int kSdPM = 1, kSdPN = 2, kdKVM = 1, kdKVN = 2, kdQM = 1, kdQN = 2;
};

template <class Element_, int kHeadDim_, class Config = TileConfigBwdSm90<kHeadDim_>>
struct KernelTraitsBwdSm90 {
  using Element = Element_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = Config::kBlockM;
  static constexpr int kBlockN = Config::kBlockN;
  static constexpr int kNWarpgroups = 2;
  static constexpr int kNThreads = kNWarpgroups * 128;
  static constexpr int kQStages = 2;  // Q and dO of the next step load while this one computes

  // A (kM x kN x kK) product over the two warpgroups split (kWgM, kWgN), A and B of the given majors.
  template <int kM, int kN, int kK, int kWgM, int kWgN, cute::GMMA::Major kMajorA, cute::GMMA::Major kMajorB>
  using TiledMma = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<Element, Element, float,
                                 cute::Shape<cute::Int<kM / kWgM>, cute::Int<kN / kWgN>, cute::Int<kK>>, kMajorA,
                                 kMajorB>(),
      cute::Layout<cute::Shape<cute::Int<kWgM>, cute::Int<kWgN>, cute::_1>>{}));
  static_assert(Config::kSdPM * Config::kSdPN == kNWarpgroups && Config::kdKVM * Config::kdKVN == kNWarpgroups &&
                    Config::kdQM * Config::kdQN == kNWarpgroups,
                "each product takes both warpgroups");
  static_assert(kBlockM / Config::kSdPM == 64 && kBlockN / Config::kdKVM == 64 && kBlockM / Config::kdQM == 64,
                "wgmma's M is 64 per warpgroup");
  // dK/dV read Q^T and dO^T MN-major (N = their head-dim share): whole 64-element atoms of 128-byte rows.
  static_assert((kHeadDim / Config::kdKVN) % 64 == 0, "dK/dV's head-dim share keeps whole swizzle atoms");
  using TiledMmaSdP = TiledMma<kBlockM, kBlockN, kHeadDim, Config::kSdPM, Config::kSdPN, cute::GMMA::Major::K,
                               cute::GMMA::Major::K>;
  using TiledMmadKV = TiledMma<kBlockN, kHeadDim, kBlockM, Config::kdKVM, Config::kdKVN, cute::GMMA::Major::MN,
                               cute::GMMA::Major::MN>;
  using TiledMmadQ = TiledMma<kBlockM, kHeadDim, kBlockN, Config::kdQM, Config::kdQN, cute::GMMA::Major::K,
                              cute::GMMA::Major::MN>;

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
  // dQ reads K^T MN-major, each warpgroup kHeadDim / kdQN of its rows: K's swizzle atom is that wide (hd64:
  // 32 elements, 64-byte rows).
  static constexpr int kdQCols = kHeadDim / Config::kdQN;
  static_assert(kdQCols % 32 == 0, "dQ's head-dim share is whole swizzle atoms");
  using SmemLayoutAtomKV = std::conditional_t<kdQCols % 64 == 0, SmemLayoutAtom, cute::GMMA::Layout_K_SW64_Atom<Element>>;
  using SmemLayoutKV = decltype(cute::tile_to_shape(SmemLayoutAtomKV{}, cute::Shape<cute::Int<kBlockN>, cute::Int<kHeadDim>>{}));
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
