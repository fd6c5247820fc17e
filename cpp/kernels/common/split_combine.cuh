// The split-KV combine: merges the partial results (normalized O and LSE per part) of each packed query row
// into the row's O, in the problem's dtype and layout, and its LSE. Arch-free CUDA (no tensor cores).
//
// With partial LSEs l_i and outputs O_i: m = max l_i, w_i = exp(l_i - m) / sum_j exp(l_j - m),
// O = sum w_i O_i, LSE = m + log(sum_j exp(l_j - m)). A part that saw no key has l_i = -inf and weight 0;
// a row with no key in any part gets O = 0 and LSE = -inf. NaN in a part propagates to the row.
#pragma once

#include <cstdint>

#include <cutlass/numeric_types.h>
#include <math_constants.h>

#include "common/split_kv.hpp"
#include "sdpa/problem.hpp"

namespace sdpa {

struct CombineParams {
  TensorView o;          // written, (B, Hq, Sq, D)
  float* lse = nullptr;  // optional, (B, Hq, Sq) contiguous
  const float* o_partial = nullptr;
  const float* lse_partial = nullptr;
  SplitKvLayout layout;
  int heads_kv = 0;
  int group = 1;
  int seqlen_q = 0;
};

constexpr int kCombineWarps = 4;  // one packed row per warp

__device__ __forceinline__ float warp_allreduce_max(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

__device__ __forceinline__ float warp_allreduce_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Grid (ceil(packed rows / kCombineWarps), B * Hkv); each lane owns kHeadDim / 32 contiguous dims.
template <class Element, int kHeadDim>
__global__ void __launch_bounds__(kCombineWarps * 32) split_kv_combine_kernel(const __grid_constant__ CombineParams p) {
  constexpr int kPerLane = kHeadDim / 32;
  static_assert(kPerLane % 2 == 0, "lanes read float2 pairs");
  const int lane = threadIdx.x % 32;
  const int packed_row = blockIdx.x * kCombineWarps + threadIdx.x / 32;
  const int batch_head = blockIdx.y;
  if (packed_row >= p.layout.packed_rows) return;

  float row_max = -CUDART_INF_F;
  for (int i = lane; i < p.layout.partials; i += 32) {
    row_max = fmaxf(row_max, p.lse_partial[p.layout.row(i, batch_head, packed_row)]);
  }
  row_max = warp_allreduce_max(row_max);
  float sum = 0.0f;
  if (row_max != -CUDART_INF_F) {
    for (int i = lane; i < p.layout.partials; i += 32) {
      sum += expf(p.lse_partial[p.layout.row(i, batch_head, packed_row)] - row_max);
    }
    sum = warp_allreduce_sum(sum);
  }
  const bool empty = sum == 0.0f;

  float acc[kPerLane] = {};
  if (!empty) {
    const float inv_sum = 1.0f / sum;
    for (int i = 0; i < p.layout.partials; ++i) {
      const int64_t row = p.layout.row(i, batch_head, packed_row);
      const float l = p.lse_partial[row];  // the same for the whole warp
      if (l == -CUDART_INF_F) continue;
      const float w = expf(l - row_max) * inv_sum;
      const float2* src = reinterpret_cast<const float2*>(p.o_partial + row * kHeadDim + lane * kPerLane);
#pragma unroll
      for (int e = 0; e < kPerLane / 2; ++e) {
        const float2 v = src[e];
        acc[2 * e] = fmaf(w, v.x, acc[2 * e]);
        acc[2 * e + 1] = fmaf(w, v.y, acc[2 * e + 1]);
      }
    }
  }

  const int batch = batch_head / p.heads_kv;
  const int head_q = (batch_head % p.heads_kv) * p.group + packed_row % p.group;
  const int position = packed_row / p.group;
  Element* dst = static_cast<Element*>(const_cast<void*>(p.o.data)) + batch * p.o.stride_batch +
                 head_q * p.o.stride_head + position * p.o.stride_seq + lane * kPerLane;
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) dst[e] = Element(acc[e]);
  if (lane == 0 && p.lse != nullptr) {
    const int heads_q = p.heads_kv * p.group;
    p.lse[(int64_t(batch) * heads_q + head_q) * p.seqlen_q + position] =
        empty ? -CUDART_INF_F : row_max + logf(sum);
  }
}

}  // namespace sdpa
