// Helpers shared by the C++ tests: 16-bit float conversions written out by hand (so the tests depend on
// neither CUDA's headers nor the library's), host tensors with arbitrary strides, and seeded random fills.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "sdpa/sdpa.hpp"

namespace sdpa_test {

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// bf16 is the top half of an fp32; round to nearest even by adding just under half an ulp plus the lsb.
inline uint16_t float_to_bf16(float f) {
  const uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  const uint32_t lsb = (u >> 16) & 1u;
  return static_cast<uint16_t>((u + 0x7fffu + lsb) >> 16);
}

inline float bf16_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

// IEEE binary16, round to nearest even, with subnormals and overflow to inf.
inline uint16_t float_to_fp16(float f) {
  const uint32_t u = float_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds past 65504, the largest half
  if (abs < 0x38800000u) {
    // Below 2^-14 the half is subnormal, a multiple of 2^-24. Scaling by 2^24 is exact, and nearbyint
    // rounds half to even in the default rounding mode; a result of 0x400 is correctly the smallest normal.
    const float scaled = std::fabs(f) * 16777216.0f;
    return sign | static_cast<uint16_t>(std::nearbyint(scaled));
  }
  const uint32_t exponent = (abs >> 23) - 127 + 15;
  const uint32_t mantissa = abs & 0x7fffffu;
  uint32_t half = (exponent << 10) | (mantissa >> 13);
  const uint32_t rest = mantissa & 0x1fffu;                   // the 13 bits dropped
  if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;  // a carry into the exponent is right
  return sign | static_cast<uint16_t>(half);
}

inline float fp16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 0x1f) return bits_float(sign | 0x7f800000u | (mantissa << 13));  // inf or NaN
  return bits_float(sign | ((exponent - 15 + 127) << 23) | (mantissa << 13));
}

inline uint16_t to_half_bits(sdpa::DType dtype, float f) {
  return dtype == sdpa::DType::kBFloat16 ? float_to_bf16(f) : float_to_fp16(f);
}

inline float from_half_bits(sdpa::DType dtype, uint16_t h) {
  return dtype == sdpa::DType::kBFloat16 ? bf16_to_float(h) : fp16_to_float(h);
}

// The value a kernel actually sees after the input is stored in `dtype`.
inline float round_to(sdpa::DType dtype, float f) { return from_half_bits(dtype, to_half_bits(dtype, f)); }

// A host (B, H, S, D) fp32 tensor with explicit element strides, so tests can build non-contiguous views.
struct HostTensor {
  int batch = 0, heads = 0, seqlen = 0, head_dim = 0;
  int64_t stride_batch = 0, stride_head = 0, stride_seq = 0;
  std::vector<float> data;

  float& at(int b, int h, int s, int d) { return data[offset(b, h, s) + d]; }
  float at(int b, int h, int s, int d) const { return data[offset(b, h, s) + d]; }
  int64_t offset(int b, int h, int s) const { return b * stride_batch + h * stride_head + s * stride_seq; }

  sdpa::TensorView view() const { return {data.data(), stride_batch, stride_head, stride_seq}; }
};

enum class Layout { kBHSD, kBSHD };

// kBHSD is contiguous (B, H, S, D); kBSHD stores (B, S, H, D) and views it as (B, H, S, D), the layout a
// transpose(1, 2) of a projection output has in PyTorch.
inline HostTensor make_tensor(int batch, int heads, int seqlen, int head_dim, Layout layout = Layout::kBHSD) {
  HostTensor t;
  t.batch = batch;
  t.heads = heads;
  t.seqlen = seqlen;
  t.head_dim = head_dim;
  t.stride_batch = static_cast<int64_t>(heads) * seqlen * head_dim;
  if (layout == Layout::kBHSD) {
    t.stride_head = static_cast<int64_t>(seqlen) * head_dim;
    t.stride_seq = head_dim;
  } else {
    t.stride_head = head_dim;
    t.stride_seq = static_cast<int64_t>(heads) * head_dim;
  }
  t.data.assign(static_cast<size_t>(t.stride_batch) * batch, 0.0f);
  return t;
}

inline void fill_uniform(std::vector<float>& values, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  for (float& x : values) x = dist(rng);
}

// Contiguous fp32 problem over host tensors, as reference_forward() wants it.
inline sdpa::AttentionProblem host_problem(const HostTensor& q, const HostTensor& k, const HostTensor& v,
                                           HostTensor& o, float* lse, float scale) {
  sdpa::AttentionProblem p;
  p.dtype = sdpa::DType::kFloat32;
  p.batch = q.batch;
  p.heads_q = q.heads;
  p.heads_kv = k.heads;
  p.seqlen_q = q.seqlen;
  p.seqlen_kv = k.seqlen;
  p.head_dim = q.head_dim;
  p.q = q.view();
  p.k = k.view();
  p.v = v.view();
  p.o = o.view();
  p.lse = lse;
  p.scale = scale;
  return p;
}

}  // namespace sdpa_test
