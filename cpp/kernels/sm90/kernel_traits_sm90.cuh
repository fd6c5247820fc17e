// Compile-time shape of the sm90 forward kernel: tile sizes, GMMA (wgmma) atoms, and the shared-memory
// layouts wgmma reads through descriptors.
//
// Warp-specialized: warpgroup 0 is the producer (it copies Q once and K/V tiles into a kStages-deep
// shared-memory pipeline), and the kBlockM query rows are split over kBlockM / 64 consumer warpgroups, each
// issuing 64-row wgmma instructions: S = Q K^T with both operands in shared memory, then O += P V with P
// straight from the registers that hold S.
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/arch/mma_sm90.hpp>
#include <cutlass/numeric_types.h>

#include "common/params.hpp"  // BiasForm

namespace sdpa {

// Tile sizes. The O accumulator (64 x kHeadDim fp32 per warpgroup, kHeadDim / 2 registers per thread) grows
// with the head dim; S takes kBlockN / 2 registers and P a quarter of that. The base tile is 128 x 128
// (128 x 64 at hd256): two consumer warpgroups of 64 rows. kWide enlarges it where shared memory and
// registers allow, so each tile's fixed cost (the O rescale, the row reductions, the pipeline waits, the
// ping-pong hand-offs) is spread over more work:
//  - hd64: 192 x 128, three consumer warpgroups (S, P and O of 64 rows fit in 160 registers);
//  - hd128: 176 keys; Q and 2 x 2 stages of 176 x 128 fill 208 KB;
//  - hd256: 80 keys; Q and 4 stages of 80 x 256 fill 224 KB.
template <int kHeadDim, bool kWide = false>
struct TileConfigSm90 {
  static constexpr int kBlockM = kWide && kHeadDim == 64 ? 192 : 128;
  static constexpr int kBlockN = kHeadDim == 256 ? (kWide ? 80 : 64) : (kWide && kHeadDim == 128 ? 176 : 128);
};

// The tile sizes of Bias's kernel (a BiasTrait) in launch form kForm. Wide tiles are for dense (TMA) launches
// of biases that stage no tile in shared memory (no room is left for one at hd128 and hd256), and
//  - at hd128 only without a causal mask: a causal block there keeps key tiles the size of its row block, so
//    the diagonal crosses as few of them as it can;
//  - at hd64 not for an additive bias evaluated per element: its values do not fit the 160 registers of three
//    consumer warpgroups beside S, P and O (ALiBi spilled ~300 bytes); the split form does.
// A variable-length batch keeps the base tile: its cp.async producer keeps 40 registers, which leaves the
// consumers 232, and the wide tiles spill there (4 bytes at hd128, 36 at hd256).
template <int kHeadDim, class Bias, BiasForm kForm, bool kVarlen>
using TileConfigSm90For =
    TileConfigSm90<kHeadDim, !kVarlen && !Bias::kStagesTile && (kHeadDim != 128 || !Bias::kIsCausal) &&
                                 (kHeadDim != 64 || !Bias::kHasValue || kForm != BiasForm::kElementwise)>;

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
  // setmaxnreg: the producer only computes addresses, so the consumers take its registers; the sum stays
  // within the 64K registers of the SM at kNThreads threads. Two consumer warpgroups: 24 + 2 x 240 = 3 x 168
  // (a TMA producer is one thread issuing copies), or 40 + 2 x 232 for a variable-length batch, whose
  // producer runs 128 threads of cp.async address math. Three: 32 + 3 x 160 = 4 x 128.
  static constexpr uint32_t producer_regs(bool varlen) { return kNWarpgroups == 3 ? 32 : varlen ? 40 : 24; }
  static constexpr uint32_t consumer_regs(bool varlen) { return kNWarpgroups == 3 ? 160 : varlen ? 232 : 240; }
  static_assert(kNWarpgroups == 2 || kNWarpgroups == 3, "the register split covers two or three consumer warpgroups");
  static_assert(kHeadDim % 64 == 0, "rows are whole 128-byte swizzle atoms");

  // S = Q K^T: (64 x kBlockN x kHeadDim) per warpgroup, Q and K both K-major (head dim contiguous) in smem.
  using TiledMmaQK = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<Element, Element, float,
                                 cute::Shape<cute::_64, cute::Int<kBlockN>, cute::Int<kHeadDim>>>(),
      cute::Layout<cute::Shape<cute::Int<kNWarpgroups>, cute::_1, cute::_1>>{}));
  // The N = 176 and N = 80 wgmma shapes exist only under CUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED (CMake defines it
  // for the sm90 kernels); without it CuTe silently builds those tiles from N = 16 instructions.
  static_assert(cute::get<1>(typename TiledMmaQK::AtomShape_MNK{}) == kBlockN,
                "S = Q K^T must be one wgmma per 16-deep k step: compile with "
                "-DCUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED, or CuTe splits a 176- or 80-key tile into N = 16 "
                "instructions");
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

// The traits of each launch form of Bias's kernel (common/launch_fwd.cuh's TraitsFor).
template <class Element, int kHeadDim, class Bias>
struct KernelTraitsSm90For {
  template <BiasForm kForm, bool kVarlen>
  using type = KernelTraitsSm90<Element, kHeadDim, TileConfigSm90For<kHeadDim, Bias, kForm, kVarlen>>;
};

}  // namespace sdpa
