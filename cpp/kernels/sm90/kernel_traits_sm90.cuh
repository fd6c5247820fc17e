// Compile-time shape of the sm90 forward kernel: tile sizes, GMMA (wgmma) atoms, and the shared-memory
// layouts wgmma reads through descriptors.
//
// Warp-specialized: warpgroup 0 is the producer (it copies Q once and K/V tiles into a kStages-deep
// shared-memory pipeline), and the kBlockM query rows are split over kBlockM / 64 consumer warpgroups, each
// issuing 64-row wgmma instructions: S = Q K^T with both operands in shared memory, then O += P V with P
// straight from the registers that hold S.
#pragma once

#include <cute/tensor.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/arch/mma_sm90.hpp>
#include <cutlass/numeric_types.h>

namespace sdpa {

// Tile sizes per head dim: the O accumulator (64 x kHeadDim fp32 per warpgroup, kHeadDim / 2 registers per
// thread) grows with the head dim, so hd256 takes a narrower key tile to keep S (kBlockN / 2 registers) and
// P beside it without spilling.
template <int kHeadDim>
struct TileConfigSm90 {
  static constexpr int kBlockM = 128, kBlockN = kHeadDim == 256 ? 64 : 128;
};

template <class Element_, int kHeadDim_, class Config = TileConfigSm90<kHeadDim_>>
struct KernelTraitsSm90 {
  using Element = Element_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = Config::kBlockM;
  static constexpr int kBlockN = Config::kBlockN;
  static constexpr int kNWarpgroups = kBlockM / 64;          // consumers
  static constexpr int kNConsumerThreads = kNWarpgroups * 128;
  static constexpr int kNProducerThreads = 128;
  static constexpr int kNThreads = kNProducerThreads + kNConsumerThreads;
  static constexpr int kNLoadThreads = kNProducerThreads;  // the producer copies every tile
  static constexpr int kStages = 2;
  // setmaxnreg: the producer only computes addresses, so the consumers take its registers (the sum stays
  // within the 64K registers of the SM at kNThreads threads: 40 + 2 x 232 <= 3 x 168).
  static constexpr int kProducerRegs = 40;
  static constexpr int kConsumerRegs = 232;
  static_assert(kNWarpgroups == 2, "the register split assumes two consumer warpgroups");
  static_assert(kHeadDim % 64 == 0, "rows are whole 128-byte swizzle atoms");

  // S = Q K^T: (64 x kBlockN x kHeadDim) per warpgroup, Q and K both K-major (head dim contiguous) in smem.
  using TiledMmaQK = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<Element, Element, float,
                                 cute::Shape<cute::_64, cute::Int<kBlockN>, cute::Int<kHeadDim>>>(),
      cute::Layout<cute::Shape<cute::Int<kNWarpgroups>, cute::_1, cute::_1>>{}));
  // O += P V: (64 x kHeadDim x kBlockN), P from registers, V read as (dim, key) with dim contiguous (MN-major).
  using TiledMmaPV = decltype(cute::make_tiled_mma(
      cute::GMMA::rs_op_selector<Element, Element, float,
                                 cute::Shape<cute::_64, cute::Int<kHeadDim>, cute::Int<kBlockN>>,
                                 cute::GMMA::Major::K, cute::GMMA::Major::MN>(),
      cute::Layout<cute::Shape<cute::Int<kNWarpgroups>, cute::_1, cute::_1>>{}));

  // 128-byte swizzled rows, the layout wgmma's descriptors expect for K-major operands.
  using SmemLayoutAtom = cute::GMMA::Layout_K_SW128_Atom<Element>;
  using SmemLayoutQ = decltype(cute::tile_to_shape(SmemLayoutAtom{},
                                                   cute::Shape<cute::Int<kBlockM>, cute::Int<kHeadDim>>{}));
  using SmemLayoutKV = decltype(cute::tile_to_shape(SmemLayoutAtom{},
                                                    cute::Shape<cute::Int<kBlockN>, cute::Int<kHeadDim>>{}));
  // V is stored (key, dim) like K; P V reads it as (dim, key): the same bytes, dim-contiguous.
  using SmemLayoutVt = decltype(cute::composition(
      SmemLayoutKV{}, cute::make_ordered_layout(cute::Shape<cute::Int<kHeadDim>, cute::Int<kBlockN>>{},
                                                cute::Step<cute::_2, cute::_1>{})));

  static constexpr int kSmemQElems = int(cute::cosize_v<SmemLayoutQ>);
  static constexpr int kSmemKVElems = int(cute::cosize_v<SmemLayoutKV>);
  // Q, then kStages K tiles, then kStages V tiles (every tile a multiple of the 1024-byte swizzle pattern).
  static constexpr int kSmemBytes = int(sizeof(Element)) * (kSmemQElems + 2 * kStages * kSmemKVElems);

  // Global -> shared in 16-byte cp.async vectors (zero-filled past the sequence) by the producer warpgroup, 8
  // threads per 64-element row of a swizzle atom, as in the sm80 kernel (kv_tile_loader and the paged loads
  // take kNThreads threads from here: the producer's).
  static constexpr int kGmemElemsPerVec = 16 / int(sizeof(Element));
  static constexpr int kGmemThreadsPerRow = 64 / kGmemElemsPerVec;
  using GmemTiledCopyQKV = decltype(cute::make_tiled_copy(
      cute::Copy_Atom<cute::SM80_CP_ASYNC_CACHEGLOBAL_ZFILL<cute::uint128_t>, Element>{},
      cute::Layout<cute::Shape<cute::Int<kNProducerThreads / kGmemThreadsPerRow>, cute::Int<kGmemThreadsPerRow>>,
                   cute::Stride<cute::Int<kGmemThreadsPerRow>, cute::_1>>{},
      cute::Layout<cute::Shape<cute::_1, cute::Int<kGmemElemsPerVec>>>{}));
};

}  // namespace sdpa
