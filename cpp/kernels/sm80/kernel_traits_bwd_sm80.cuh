// Compile-time shape of the sm80 backward kernel: tile sizes, the three MMA tilings (scores, dK/dV, dQ),
// shared-memory layouts with the transposed views the dK/dV/dQ products read, and the copy atoms.
//
// One block owns kBlockN keys and walks kBlockM query rows per step. Five products per step:
//   S  = Q K^T, dP = dO V^T          (kBlockM x kBlockN)   tiling SdP
//   dV += P^T dO, dK += dS^T Q       (kBlockN x kHeadDim)  tiling dKV, operands read transposed from smem
//   dQ  = dS K                       (kBlockM x kHeadDim)  tiling dQ, flushed to fp32 accumulators
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/numeric_types.h>

#include "sm80/kernel_traits_sm80.cuh"

namespace sdpa {

// Tiles per head dim, FlashAttention-2's sm80 choices: dK and dV (kBlockN x kHeadDim fp32 each) live in
// registers for the whole block, so larger head dims take fewer keys. kQStages buffers of Q and dO let
// the next step's loads overlap this step's products; hd256 keeps one to fit 164 KB of smem (A100).
template <int kHeadDim>
struct TileConfigBwdSm80 {
  static constexpr int kBlockM = 64, kBlockN = 128, kNWarps = 8, kQStages = 2;
  static constexpr int kWarpsMSdP = 2, kWarpsNdKV = 4, kWarpsMdQ = 2;
};
template <>
struct TileConfigBwdSm80<256> {
  static constexpr int kBlockM = 64, kBlockN = 64, kNWarps = 8, kQStages = 1;
  static constexpr int kWarpsMSdP = 4, kWarpsNdKV = 2, kWarpsMdQ = 2;
};

template <class Element_, int kHeadDim_, class Config = TileConfigBwdSm80<kHeadDim_>>
struct KernelTraitsBwdSm80 {
  using Element = Element_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = Config::kBlockM;
  static constexpr int kBlockN = Config::kBlockN;
  static constexpr int kNWarps = Config::kNWarps;
  static constexpr int kNThreads = kNWarps * 32;
  static constexpr int kQStages = Config::kQStages;
  static_assert(kBlockN % 64 == 0, "P and dS rows are built from 64-element swizzle atoms");

  // The forward's atoms, swizzled smem rows and global copies, at this kernel's thread count (its tile
  // sizes are not used).
  struct BaseConfig {
    static constexpr int kBlockM = 16 * Config::kNWarps, kBlockN = Config::kBlockN, kNWarps = Config::kNWarps;
  };
  using Base = KernelTraitsSm80<Element, kHeadDim, BaseConfig>;
  using MmaAtom = typename Base::MmaAtom;
  template <int kWarpsM>
  using TiledMmaWarps = cute::TiledMMA<MmaAtom, cute::Layout<cute::Shape<cute::Int<kWarpsM>, cute::Int<kNWarps / kWarpsM>, cute::_1>>,
                                       cute::Tile<cute::Int<16 * kWarpsM>, cute::Int<16 * kNWarps / kWarpsM>, cute::_16>>;
  using TiledMmaSdP = TiledMmaWarps<Config::kWarpsMSdP>;
  using TiledMmadKV = TiledMmaWarps<Config::kWarpsNdKV>;
  using TiledMmadQ = TiledMmaWarps<Config::kWarpsMdQ>;

  using SmemLayoutAtom = typename Base::SmemLayoutAtom;
  template <int kRows, int kCols>
  using SmemLayout = decltype(cute::tile_to_shape(SmemLayoutAtom{}, cute::Shape<cute::Int<kRows>, cute::Int<kCols>>{}));
  // The (kCols, kRows) view of a (kRows, kCols) smem tile, for operands consumed transposed.
  template <class Layout, int kRows, int kCols>
  using Transposed = decltype(cute::composition(
      Layout{}, cute::make_layout(cute::Shape<cute::Int<kCols>, cute::Int<kRows>>{}, cute::GenRowMajor{})));

  using SmemLayoutQdO = SmemLayout<kBlockM, kHeadDim>;
  using SmemLayoutQdOt = Transposed<SmemLayoutQdO, kBlockM, kHeadDim>;  // (kHeadDim, kBlockM)
  using SmemLayoutKV = SmemLayout<kBlockN, kHeadDim>;
  using SmemLayoutKt = Transposed<SmemLayoutKV, kBlockN, kHeadDim>;     // (kHeadDim, kBlockN)
  using SmemLayoutPdS = SmemLayout<kBlockM, kBlockN>;
  using SmemLayoutPdSt = Transposed<SmemLayoutPdS, kBlockM, kBlockN>;  // (kBlockN, kBlockM)

  // Register fragments need only the shape of a transposed view; its swizzle-free part has it.
  using SmemLayoutQdOtNoSwizzle = decltype(cute::get_nonswizzle_portion(SmemLayoutQdOt{}));
  using SmemLayoutKtNoSwizzle = decltype(cute::get_nonswizzle_portion(SmemLayoutKt{}));
  using SmemLayoutPdStNoSwizzle = decltype(cute::get_nonswizzle_portion(SmemLayoutPdSt{}));

  static constexpr int kSmemQdOElems = int(cute::cosize_v<SmemLayoutQdO>);
  static constexpr int kSmemKVElems = int(cute::cosize_v<SmemLayoutKV>);
  static constexpr int kSmemPdSElems = int(cute::cosize_v<SmemLayoutPdS>);
  // K, V, kQStages x (Q, dO), P, dS.
  static constexpr int kSmemBytes =
      int(sizeof(Element)) * (2 * kSmemKVElems + 2 * kQStages * kSmemQdOElems + 2 * kSmemPdSElems);

  using SmemCopyAtom = typename Base::SmemCopyAtom;
  using SmemCopyAtomTransposed = typename Base::SmemCopyAtomTransposed;
  using SmemCopyAtomPdS = cute::Copy_Atom<cute::AutoVectorizingCopyWithAssumedAlignment<32>, Element>;
  using GmemTiledCopy = typename Base::GmemTiledCopyQKV;
};

}  // namespace sdpa
