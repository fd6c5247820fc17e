// The additive part of a bias that adds nothing.
#pragma once

#include "sdpa/bias.hpp"
#include "common/block_coord.hpp"

namespace sdpa {

struct NoAdditive {
  static constexpr BiasKind kKind = BiasKind::kNone;
  static constexpr bool kSplittable = false;  // see AlibiSlopes::row_part
  static constexpr bool kStagesTile = false;  // see DenseValues::stage_tile
  static constexpr bool kHasValue = false;  // kernels skip the bias step entirely

  struct Params {};
  static Params make_params(const BiasDesc&) { return {}; }

  NoAdditive() = default;
  SDPA_HOST_DEVICE NoAdditive(const Params&, const BlockCoord&, int /*head_q*/) {}

  template <class Element>
  SDPA_HOST_DEVICE float value(int /*i*/, int /*j*/) const {
    return 0.0f;
  }
};

}  // namespace sdpa
