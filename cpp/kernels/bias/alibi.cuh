// ALiBi (Press et al., 2022): a per-head linear penalty on the distance between query and key,
//
//   value(i, j) = -slope[b, h] * |i + (Skv - Sq) - j|
//
// The distance is measured from the lower-right diagonal, so the last query sits at distance 0 from the
// last key whatever Sq and Skv are. Drawn for Sq = 2, Skv = 4, slope s:
//
//   -2s -1s  0  -1s
//   -3s -2s -1s  0
//
// Nothing is read per element: a kernel needs the slope of the row's query head (one load per head) and
// integer positions.
#pragma once

#include <cstdint>

#include "sdpa/bias.hpp"
#include "common/block_coord.hpp"

namespace sdpa {

struct AlibiSlopes {
  static constexpr BiasKind kKind = BiasKind::kAlibi;
  static constexpr bool kStagesTile = false;  // see DenseValues::stage_tile
  static constexpr bool kHasValue = true;

  struct Params {
    const float* slopes = nullptr;
    int64_t stride_batch = 0;
    int64_t stride_head = 1;
  };
  static Params make_params(const BiasDesc& bias) {
    return {bias.alibi.slopes, bias.alibi.stride_batch, bias.alibi.stride_head};
  }

  float slope = 0.0f;
  int offset = 0;  // Skv - Sq

  AlibiSlopes() = default;
  // The view for rows of query head head_q in the block at `coord`.
  SDPA_HOST_DEVICE AlibiSlopes(const Params& params, const BlockCoord& coord, int head_q)
      : slope(params.slopes[coord.batch * params.stride_batch + head_q * params.stride_head]),
        offset(coord.seqlen_kv - coord.seqlen_q) {}

  template <class Element>
  SDPA_HOST_DEVICE float value(int i, int j) const {
    const int distance = i + offset - j;
    return -slope * static_cast<float>(distance < 0 ? -distance : distance);
  }

  // On and left of its diagonal (j <= i + offset) the |.| vanishes and the value splits into a row part and
  // a column part: -slope * (i - row0) + slope * (j - (row0 + offset)). row0 anchors both parts near the
  // block's diagonal so they stay small and exact in fp32 even at long sequence lengths.
  static constexpr bool kSplittable = true;
  static SDPA_HOST_DEVICE int split_diagonal(int seqlen_q, int seqlen_kv) { return seqlen_kv - seqlen_q; }
  SDPA_HOST_DEVICE float row_part(int i, int row0) const { return -slope * static_cast<float>(i - row0); }
  SDPA_HOST_DEVICE float column_part(int j, int row0) const {
    return slope * static_cast<float>(j - (row0 + offset));
  }
};

}  // namespace sdpa
