// Tile sizes of the sm80 forward kernel, per head dim and bias trait: one constexpr table.
#pragma once

#include <type_traits>

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
    std::conditional_t<(kHeadDim == 128 && (Bias::kIsCausal || Bias::kStagesTile)) ||
                           (kHeadDim == 64 && Bias::kStagesTile),
                       TileConfigSm80Wide, TileConfigSm80<kHeadDim>>;

}  // namespace sdpa
