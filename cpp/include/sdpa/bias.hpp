// What a bias is, as data. A bias is an additive part (none, ALiBi or a dense tensor) plus an optional
// causal mask. Each combination maps onto one bias trait in cpp/kernels/bias/, which knows how to
// evaluate it element by element and which tiles it lets a kernel skip.
//
// Causal variants, drawn for Sq = 3, Skv = 4 (1 = attend):
//
//   kUpperLeft          kLowerRight
//   1 0 0 0             1 1 0 0
//   1 1 0 0             1 1 1 0
//   1 1 1 0             1 1 1 1
//
// Upper-left keeps key j for query i when j <= i; lower-right when j <= i + (Skv - Sq).
#pragma once

#include <cstdint>
#include <string>

#include "sdpa/dtype.hpp"

namespace sdpa {

enum class CausalVariant : int { kNone = 0, kUpperLeft = 1, kLowerRight = 2 };

enum class BiasKind : int {
  kNone = 0,   // no additive part
  kAlibi = 1,  // -slope[b, h] * |i + (Skv - Sq) - j|
  kDense = 2,  // a (B, H, Sq, Skv) tensor, broadcast through zero strides
};

// ALiBi slopes: fp32 in device memory (kernels read them; the host reference reads host memory), indexed slopes[b * stride_batch + h * stride_head] (stride_batch 0 for shape (H,)).
struct AlibiDesc {
  const float* slopes = nullptr;
  int64_t stride_batch = 0;
  int64_t stride_head = 1;
};

// Additive values below this count as masked, exactly like -inf: the kernels scale scores by log2(e),
// which overflows float32 to -inf below about -FLT_MAX / log2(e). So finfo(bfloat16/float32).min masks
// (the Hugging Face convention) remove keys, and a row of them outputs 0. finfo(float16).min is finite.
constexpr float kMaskedBelow = -2.35e38f;

// Dense bias or mask. An additive bias has the problem's dtype; a mask is DType::kBool (nonzero =
// attend, as in PyTorch). Broadcast dimensions have stride 0; the key stride may be anything.
struct DenseDesc {
  const void* data = nullptr;
  DType dtype = DType::kBFloat16;
  int64_t stride_batch = 0;
  int64_t stride_head = 0;
  int64_t stride_q = 0;
  int64_t stride_kv = 1;

  bool is_mask() const { return dtype == DType::kBool; }
};

struct BiasDesc {
  BiasKind kind = BiasKind::kNone;
  CausalVariant causal = CausalVariant::kNone;
  AlibiDesc alibi;
  DenseDesc dense;
};

inline const char* causal_variant_name(CausalVariant causal) {
  switch (causal) {
    case CausalVariant::kNone: return "none";
    case CausalVariant::kUpperLeft: return "upper_left";
    case CausalVariant::kLowerRight: return "lower_right";
  }
  return "unknown";
}

// The trait name a bias maps onto, as used in kernel names, explain() and file names: NoBias,
// CausalUpperLeft, ..., DenseBiasCausalLowerRight (the list is sdpa/bias_traits.def).
inline const char* bias_trait_c_name(const BiasDesc& bias) {
#define SDPA_BIAS_TRAIT(Name, Kind, Causal) \
  if (bias.kind == BiasKind::Kind && bias.causal == CausalVariant::Causal) return #Name;
#include "sdpa/bias_traits.def"
#undef SDPA_BIAS_TRAIT
  return "Unknown";
}
inline std::string bias_trait_name(const BiasDesc& bias) { return bias_trait_c_name(bias); }

}  // namespace sdpa
