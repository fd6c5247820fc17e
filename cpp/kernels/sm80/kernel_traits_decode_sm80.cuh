// Compile-time shape of the sm80 split-KV decode kernel: a tile of 16 packed query rows against key tiles
// of kBlockN keys, split between the warps by columns.
//
// A decode step reads each K/V byte once and does little arithmetic on it, so the kernel is built around
// memory: kStages key tiles in flight through cp.async, and warps that split the key columns (each warp
// owns kWarpN keys of every tile, with its own softmax statistics) so that each K/V element is read from
// smem by one warp only. A prefill tile splits rows instead, which would make every warp read the whole
// tile for 16 rows of which a decode step fills a few.
#pragma once

#include <cute/tensor.hpp>

#include "sm80/kernel_traits_sm80.cuh"

namespace sdpa {

template <int kHeadDim>
struct TileConfigDecodeSm80 {
  static constexpr int kWarpN = kHeadDim == 64 ? 32 : 16;  // keys per warp per tile, whole 16-key MMA k-slices
  static constexpr int kStages = kHeadDim == 256 ? 2 : 3;  // 96, 96, 128 KB of K/V
};

template <class Element_, int kHeadDim_>
struct KernelTraitsDecodeSm80 {
  using Element = Element_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kNWarps = 4;
  static constexpr int kNThreads = 32 * kNWarps;
  static constexpr int kNLoadThreads = kNThreads;  // every thread copies tiles (paged_load_sm80.cuh)
  static constexpr int kBlockM = 16;  // packed rows: one MMA row tile, shared by every warp
  static constexpr int kWarpN = TileConfigDecodeSm80<kHeadDim>::kWarpN;
  static constexpr int kBlockN = kWarpN * kNWarps;
  static constexpr int kStages = TileConfigDecodeSm80<kHeadDim>::kStages;
  // Q stays in registers across the key loop where the O accumulator leaves room for it.
  static constexpr bool kQInRegisters = kHeadDim <= 128;

  // The prefill kernel's smem atoms, ldmatrix and cp.async copies (a 64-row config of 4 warps: only its
  // K/V tile shape and thread count matter here).
  struct PrefillConfig {
    static constexpr int kBlockM = 64, kBlockN = KernelTraitsDecodeSm80::kBlockN, kNWarps = 4;
  };
  using Base = KernelTraitsSm80<Element, kHeadDim, PrefillConfig>;
  using MmaAtom = typename Base::MmaAtom;
  // One warp's MMA: each warp multiplies the 16 rows by its own columns, so the tiling is a single warp.
  using WarpMma = cute::TiledMMA<MmaAtom, cute::Layout<cute::Shape<cute::_1, cute::_1, cute::_1>>,
                                 cute::Tile<cute::_16, cute::_16, cute::_16>>;

  using SmemLayoutQ = decltype(cute::tile_to_shape(typename Base::SmemLayoutAtom{},
                                                   cute::Shape<cute::Int<kBlockM>, cute::Int<kHeadDim>>{}));
  using SmemLayoutKV = typename Base::SmemLayoutKV;
  using SmemLayoutVt = typename Base::SmemLayoutVt;
  using SmemLayoutVtNoSwizzle = typename Base::SmemLayoutVtNoSwizzle;
  static constexpr int kSmemQElems = int(cute::cosize_v<SmemLayoutQ>);
  static constexpr int kSmemKVElems = int(cute::cosize_v<SmemLayoutKV>);
  static constexpr int kSmemBytes = int(sizeof(Element)) * (kSmemQElems + 2 * kStages * kSmemKVElems);
  // After the key loop the K/V stages hold the merge of the warps' results: their LSEs and O, fp32.
  static_assert((kNWarps * kBlockM + kNWarps * kBlockM * kHeadDim) * 4 <= int(sizeof(Element)) * 2 * kStages * kSmemKVElems,
                "the warps' merge must fit in the K/V stages");

  using SmemCopyAtom = typename Base::SmemCopyAtom;
  using SmemCopyAtomTransposed = typename Base::SmemCopyAtomTransposed;
  using GmemTiledCopyKV = typename Base::GmemTiledCopyQKV;
  static constexpr int kGmemElemsPerVec = Base::kGmemElemsPerVec;
};

}  // namespace sdpa
