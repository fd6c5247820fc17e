// A bias the user materialized: a (B, H, Sq, Skv) tensor, broadcast through zero strides.
//
// Additive biases have the problem's element type and are added to the scaled scores. Boolean masks
// (one byte per element, nonzero = attend, as in PyTorch) add 0 where kept and -inf where removed.
#pragma once

#include <cstdint>

#include "sdpa/bias.hpp"
#include "tile_range.cuh"

namespace sdpa {

struct DenseValues {
  static constexpr BiasKind kKind = BiasKind::kDense;
  static constexpr bool kSplittable = false;  // see AlibiSlopes::row_part
  static constexpr bool kHasValue = true;

  struct Params {
    const void* data = nullptr;
    bool is_mask = false;
    int64_t stride_batch = 0;
    int64_t stride_head = 0;
    int64_t stride_q = 0;
    int64_t stride_kv = 1;
  };
  static Params make_params(const BiasDesc& bias) {
    const DenseDesc& d = bias.dense;
    return {d.data, d.is_mask(), d.stride_batch, d.stride_head, d.stride_q, d.stride_kv};
  }

  const char* base = nullptr;  // this (batch, head)'s slice, as bytes so one pointer serves both types
  bool is_mask = false;
  int64_t stride_q = 0;
  int64_t stride_kv = 1;

  DenseValues() = default;
  // Element-typed offsets are applied in value(), where the element size is known.
  SDPA_HOST_DEVICE DenseValues(const Params& params, int batch, int head, int /*seqlen_q*/,
                               int /*seqlen_kv*/)
      : base(static_cast<const char*>(params.data)),
        is_mask(params.is_mask),
        stride_q(params.stride_q),
        stride_kv(params.stride_kv),
        slice_offset(batch * params.stride_batch + head * params.stride_head) {}

  template <class Element>
  SDPA_HOST_DEVICE float value(int i, int j) const {
    const int64_t index = slice_offset + i * stride_q + j * stride_kv;
    if (is_mask) {
      return base[index] ? 0.0f : -__builtin_huge_valf();
    }
    return static_cast<float>(reinterpret_cast<const Element*>(base)[index]);
  }

 private:
  int64_t slice_offset = 0;
};

}  // namespace sdpa
