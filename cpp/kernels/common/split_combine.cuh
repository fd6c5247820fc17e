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

#include "common/seq_info.hpp"
#include "common/split_kv.hpp"
#include "sdpa/problem.hpp"

namespace sdpa {

struct CombineParams {
  TensorView o;          // written, (B, Hq, Sq, D)
  float* lse = nullptr;  // optional, (B, Hq, Sq) contiguous; (total_q, Hq) for a variable-length batch
  SeqLayout seq;
  const float* o_partial = nullptr;
  const float* lse_partial = nullptr;
  SplitKvLayout layout;
  int heads_kv = 0;
  int group = 1;
  int seqlen_q = 0;
};

constexpr int kCombineWarps = 4;  // split the parts of one packed row

// Launched as a programmatic dependent of the split kernel (sm90+), the combine may start before the split
// kernel's results are visible: this waits for them. A plain launch (older GPUs) returns at once.
__device__ __forceinline__ void wait_for_primary_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// Lets the dependent combine launch start (sm90+): every block of the split kernel calls it once its
// main loop is done, so the combine's blocks are resident by the time the last partial lands.
__device__ __forceinline__ void allow_dependent_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

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

// The max and the sum of exp(l_i - max) over the row's parts, every thread of the block taking a share
// and the block reducing through `scratch` (2 x kCombineWarps floats).
__device__ __forceinline__ void row_lse_stats(const CombineParams& p, int batch_head, int packed_row, float* scratch,
                                              float& row_max, float& sum) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float m = -CUDART_INF_F;
  for (int i = threadIdx.x; i < p.layout.partials; i += blockDim.x) {
    m = fmaxf(m, p.lse_partial[p.layout.row(i, batch_head, packed_row)]);
  }
  m = warp_allreduce_max(m);
  if (lane == 0) scratch[warp] = m;
  __syncthreads();
  row_max = scratch[0];
#pragma unroll
  for (int w = 1; w < kCombineWarps; ++w) row_max = fmaxf(row_max, scratch[w]);
  float s = 0.0f;
  if (row_max != -CUDART_INF_F) {
    for (int i = threadIdx.x; i < p.layout.partials; i += blockDim.x) {
      s += expf(p.lse_partial[p.layout.row(i, batch_head, packed_row)] - row_max);
    }
  }
  s = warp_allreduce_sum(s);
  if (lane == 0) scratch[kCombineWarps + warp] = s;
  __syncthreads();
  sum = 0.0f;
#pragma unroll
  for (int w = 0; w < kCombineWarps; ++w) sum += scratch[kCombineWarps + w];
}

// Grid (B * Hkv, packed rows): one block per row (the large dimension on x, which has no 65535 limit).
// Warp w sums parts w, w + kCombineWarps, ...; each lane owns kHeadDim / 32 contiguous dims; the warps'
// sums meet in shared memory.
template <class Element, int kHeadDim>
__global__ void __launch_bounds__(kCombineWarps * 32) split_kv_combine_kernel(const __grid_constant__ CombineParams p) {
  constexpr int kPerLane = kHeadDim / 32;
  static_assert(kPerLane % 2 == 0, "lanes read float2 pairs");
  __shared__ float scratch[2 * kCombineWarps];
  __shared__ float warp_sums[kCombineWarps][kHeadDim];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int batch_head = blockIdx.x;
  const int packed_row = blockIdx.y;
  const int batch = batch_head / p.heads_kv;
  const SeqInfo seq = SeqInfo::of(p.seq, batch, p.seqlen_q, 0);
  if (packed_row >= p.group * seq.seqlen_q) return;  // a shorter sequence of a variable-length batch
  wait_for_primary_grid();

  float row_max, sum;
  row_lse_stats(p, batch_head, packed_row, scratch, row_max, sum);
  const bool empty = sum == 0.0f;

  float acc[kPerLane] = {};
  if (!empty) {
    const float inv_sum = 1.0f / sum;
    // No data-dependent branch in the body, so the loads of several parts are in flight at once. A part
    // that saw no key has l = -inf, weight 0 and O = 0.
#pragma unroll 4
    for (int i = warp; i < p.layout.partials; i += kCombineWarps) {
      const int64_t row = p.layout.row(i, batch_head, packed_row);
      const float w = expf(p.lse_partial[row] - row_max) * inv_sum;
      const float2* src = reinterpret_cast<const float2*>(p.o_partial + row * kHeadDim + lane * kPerLane);
#pragma unroll
      for (int e = 0; e < kPerLane / 2; ++e) {
        const float2 v = src[e];
        acc[2 * e] = fmaf(w, v.x, acc[2 * e]);
        acc[2 * e + 1] = fmaf(w, v.y, acc[2 * e + 1]);
      }
    }
  }
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) warp_sums[warp][lane * kPerLane + e] = acc[e];
  __syncthreads();

  const int head_q = (batch_head % p.heads_kv) * p.group + packed_row % p.group;
  const int position = packed_row / p.group;
  Element* dst = static_cast<Element*>(const_cast<void*>(p.o.data)) + seq.q_offset(p.o, batch, head_q, position);
  for (int d = threadIdx.x; d < kHeadDim; d += blockDim.x) {
    float total = 0.0f;
#pragma unroll
    for (int w = 0; w < kCombineWarps; ++w) total += warp_sums[w][d];
    dst[d] = Element(total);
  }
  if (threadIdx.x == 0 && p.lse != nullptr) {
    p.lse[seq.lse_index(batch, head_q, position, p.heads_kv * p.group, p.seqlen_q)] =
        empty ? -CUDART_INF_F : row_max + logf(sum);
  }
}

}  // namespace sdpa
