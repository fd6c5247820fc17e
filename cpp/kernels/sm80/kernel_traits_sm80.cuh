// Compile-time shape of the sm80 forward kernel: tiles, warps, shared-memory layouts, MMA and copy atoms.
//
// mma.sync (sm80 tensor cores) with ldmatrix operand loads and cp.async global->shared copies. The same
// code runs on sm90, where it is the portable fallback to wgmma.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/numeric_types.h>

namespace sdpa {

// Tile choice per head dim, following what keeps mma.sync busy without spilling: the O accumulator
// (kBlockM x kHeadDim fp32 spread over the warps) dominates registers, so larger head dims take a
// narrower key tile (hd128) or more warps (hd256).
template <int kHeadDim>
struct TileConfigSm80;
template <>
struct TileConfigSm80<64> {
  static constexpr int kBlockM = 128, kBlockN = 128, kNWarps = 4;
};
template <>
struct TileConfigSm80<128> {
  static constexpr int kBlockM = 128, kBlockN = 64, kNWarps = 4;
};
template <>
struct TileConfigSm80<256> {
  static constexpr int kBlockM = 128, kBlockN = 64, kNWarps = 8;
};

// hd128, causal or dense-biased: 128x128 over 8 warps holds half the O accumulator per thread of 128x64 over
// 4 warps, which is what lets the extra per-score work fit in registers. Measured on the H100 (S=8k,
// TFLOP/s, 4 warps -> 8 warps): bias-free causal 340 -> 340, ALiBi causal 324 -> 332, staged dense causal
// 121 -> 240 (1800 bytes of spills -> none), staged dense 269 -> 267; bias-free unmasked 364 -> 357 stays on
// 4 warps. hd64 with a staged dense bias spilled ~1.2 KB on 4 warps (128 scores per thread): 8 warps took it
// from 134 to 195 TFLOP/s (B=2, H=32, S=8k).
struct TileConfigSm80Wide {
  static constexpr int kBlockM = 128, kBlockN = 128, kNWarps = 8;
};
template <int kHeadDim, class Bias>
using TileConfigSm80For =
    cute::conditional_t<(kHeadDim == 128 && (Bias::kIsCausal || Bias::kStagesTile)) ||
                            (kHeadDim == 64 && Bias::kStagesTile),
                        TileConfigSm80Wide, TileConfigSm80<kHeadDim>>;

template <class Element_, int kHeadDim_, class Config_ = TileConfigSm80<kHeadDim_>>
struct KernelTraitsSm80 {
  using Element = Element_;
  using Config = Config_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = Config::kBlockM;
  static constexpr int kBlockN = Config::kBlockN;
  static constexpr int kNWarps = Config::kNWarps;
  static constexpr int kNThreads = kNWarps * 32;
  static_assert(kHeadDim % 64 == 0, "smem rows are built from 64-element (128-byte) swizzle atoms");
  static_assert(kBlockM == 16 * kNWarps * (kBlockM / (16 * kNWarps)), "each warp owns whole 16-row MMA tiles");

  using MmaAtom = cute::conditional_t<cute::is_same_v<Element, cutlass::half_t>,
                                      cute::MMA_Atom<cute::SM80_16x8x16_F32F16F16F32_TN>,
                                      cute::MMA_Atom<cute::SM80_16x8x16_F32BF16BF16F32_TN>>;
  // Warps split the query rows only, so a row's softmax statistics never leave its warp.
  using TiledMma = cute::TiledMMA<MmaAtom, cute::Layout<cute::Shape<cute::Int<kNWarps>, cute::_1, cute::_1>>,
                                  cute::Tile<cute::Int<16 * kNWarps>, cute::_16, cute::_16>>;

  // 128-byte rows with a 3-bit XOR swizzle: both the 16-byte cp.async writes and the ldmatrix reads of
  // eight rows at a time hit eight distinct bank groups.
  static constexpr int kSmemRowElems = 64;
  using SmemLayoutAtom = decltype(cute::composition(
      cute::Swizzle<3, 3, 3>{},
      cute::Layout<cute::Shape<cute::_8, cute::Int<kSmemRowElems>>, cute::Stride<cute::Int<kSmemRowElems>, cute::_1>>{}));
  using SmemLayoutQ = decltype(cute::tile_to_shape(SmemLayoutAtom{},
                                                   cute::Shape<cute::Int<kBlockM>, cute::Int<kHeadDim>>{}));
  using SmemLayoutKV = decltype(cute::tile_to_shape(SmemLayoutAtom{},
                                                    cute::Shape<cute::Int<kBlockN>, cute::Int<kHeadDim>>{}));
  // V is stored (key, dim) like K but consumed as the B operand (dim, key) of P @ V: a transposed view.
  using SmemLayoutVt = decltype(cute::composition(
      SmemLayoutKV{}, cute::make_layout(cute::Shape<cute::Int<kHeadDim>, cute::Int<kBlockN>>{}, cute::GenRowMajor{})));
  using SmemLayoutVtNoSwizzle = decltype(cute::get_nonswizzle_portion(SmemLayoutVt{}));
  using SmemLayoutO = SmemLayoutQ;

  static constexpr int kSmemQElems = int(cute::cosize_v<SmemLayoutQ>);
  static constexpr int kSmemKVElems = int(cute::cosize_v<SmemLayoutKV>);
  // Q, K and V each have one buffer; O reuses Q's once the last Q K^T product is done.
  static constexpr int kSmemBytes = int(sizeof(Element)) * (kSmemQElems + 2 * kSmemKVElems);

  using SmemCopyAtom = cute::Copy_Atom<cute::SM75_U32x4_LDSM_N, Element>;
  using SmemCopyAtomTransposed = cute::Copy_Atom<cute::SM75_U16x8_LDSM_T, Element>;
  using SmemCopyAtomO = cute::Copy_Atom<cute::AutoVectorizingCopyWithAssumedAlignment<32>, Element>;

  // Global memory moves in 16-byte vectors; eight threads cover one 64-element smem row.
  static constexpr int kGmemElemsPerVec = 16 / int(sizeof(Element));
  static constexpr int kGmemThreadsPerRow = kSmemRowElems / kGmemElemsPerVec;
  using GmemThreadLayout =
      cute::Layout<cute::Shape<cute::Int<kNThreads / kGmemThreadsPerRow>, cute::Int<kGmemThreadsPerRow>>,
                   cute::Stride<cute::Int<kGmemThreadsPerRow>, cute::_1>>;
  using GmemValLayout = cute::Layout<cute::Shape<cute::_1, cute::Int<kGmemElemsPerVec>>>;
  // ZFILL: rows past the sequence end are written as zeros instead of being read.
  using GmemTiledCopyQKV = decltype(cute::make_tiled_copy(
      cute::Copy_Atom<cute::SM80_CP_ASYNC_CACHEGLOBAL_ZFILL<cute::uint128_t>, Element>{}, GmemThreadLayout{},
      GmemValLayout{}));
  using GmemTiledCopyO = decltype(cute::make_tiled_copy(cute::Copy_Atom<cute::UniversalCopy<cute::uint128_t>, Element>{},
                                                        GmemThreadLayout{}, GmemValLayout{}));
};

}  // namespace sdpa
