// Compile-time shape of the sm80 forward kernel: shared-memory layouts, MMA and copy atoms for a tile
// config (sm80/tile_size_sm80.hpp).
//
// mma.sync (sm80 tensor cores) with ldmatrix operand loads and cp.async global->shared copies. The same
// code runs on sm90, where it is the portable fallback to wgmma.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/numeric_types.h>

#include "sm80/tile_size_sm80.hpp"

namespace sdpa {

template <class Element_, int kHeadDim_, class Config_ = TileConfigSm80<kHeadDim_>>
struct KernelTraitsSm80 {
  using Element = Element_;
  using Config = Config_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = Config::kBlockM;
  static constexpr int kBlockN = Config::kBlockN;
  static constexpr int kNWarps = Config::kNWarps;
  static constexpr int kNThreads = kNWarps * 32;
  static constexpr int kNLoadThreads = kNThreads;  // every thread copies tiles (paged_load_sm80.cuh)
  static_assert(kHeadDim % 64 == 0, "smem rows are built from 64-element (128-byte) swizzle atoms");
  static_assert(kBlockM == 16 * kNWarps * (kBlockM / (16 * kNWarps)), "each warp owns whole 16-row MMA tiles");

  using MmaAtom = cute::conditional_t<cute::is_same_v<Element, cutlass::half_t>,
                                      cute::MMA_Atom<cute::SM80_16x8x16_F32F16F16F32_TN>,
                                      cute::MMA_Atom<cute::SM80_16x8x16_F32BF16BF16F32_TN>>;
  // Warps split the query rows only, so a row's softmax statistics never leave its warp.
  using TiledMma = cute::TiledMMA<MmaAtom, cute::Layout<cute::Shape<cute::Int<kNWarps>, cute::_1, cute::_1>>,
                                  cute::Tile<cute::Int<16 * kNWarps>, cute::_16, cute::_16>>;
  using TiledMmaS = TiledMma;  // the MMA whose accumulator holds S (common/flash_fwd_kernel.cuh)
  using TiledMmaO = TiledMma;  // and the one whose accumulator holds O

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
