// The backward's two row kernels, arch-free and shared by every backward family: they read and write whole
// 16-byte pieces of rows and nothing of the attention tiles.
//   flash_bwd_preprocess   rowsum(dO * O) per query row, and zeroed fp32 dQ accumulators
//   flash_bwd_convert_dq   dQ = scale * accumulator, in the input dtype and the caller's strides
#pragma once

#include <cstdint>

#include <cutlass/array.h>

namespace sdpa {

// Rows handled by one 128-thread block of the row kernels below; each thread moves 8 elements (16 bytes).
template <int kHeadDim>
struct BwdRowKernel {
  static constexpr int kThreads = 128;
  static constexpr int kThreadsPerRow = kHeadDim / 8;
  static constexpr int kRows = kThreads / kThreadsPerRow;
  static_assert(kThreadsPerRow <= 32 && (kThreadsPerRow & (kThreadsPerRow - 1)) == 0, "a row stays in one warp");
};

template <class Element>
__device__ __forceinline__ cutlass::Array<Element, 8> load8(const Element* row, int col) {
  return *reinterpret_cast<const cutlass::Array<Element, 8>*>(row + col);
}

// Grid (ceil(Sq padded / kRows), Hq, B).
template <class Element, int kHeadDim, class Params>
__global__ void __launch_bounds__(BwdRowKernel<kHeadDim>::kThreads)
    flash_bwd_preprocess(const __grid_constant__ Params p) {
  using Rows = BwdRowKernel<kHeadDim>;
  const int row = blockIdx.x * Rows::kRows + threadIdx.x / Rows::kThreadsPerRow;
  const int col = (threadIdx.x % Rows::kThreadsPerRow) * 8;
  const int head = blockIdx.y, b = blockIdx.z;
  float dot = 0.0f;
  if (row < p.seqlen_q) {
    const Element* o = static_cast<const Element*>(p.o.data) + b * p.o.stride_batch + head * p.o.stride_head +
                       row * p.o.stride_seq;
    const Element* d_o = static_cast<const Element*>(p.grad_o.data) + b * p.grad_o.stride_batch +
                         head * p.grad_o.stride_head + row * p.grad_o.stride_seq;
    const auto o8 = load8(o, col);
    const auto do8 = load8(d_o, col);
#pragma unroll
    for (int e = 0; e < 8; ++e) dot += float(o8[e]) * float(do8[e]);
  }
  // Every lane of the warp is here (the grid covers the padded rows exactly), and the xor offsets stay
  // inside a row's group of threads.
#pragma unroll
  for (int offset = Rows::kThreadsPerRow / 2; offset > 0; offset /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
  const int64_t row_index = (int64_t(b) * p.heads_q + head) * p.seqlen_q_padded + row;
  if (col == 0) p.dpsum[row_index] = dot;
  float4* acc = reinterpret_cast<float4*>(p.dq_accum + row_index * kHeadDim + col);
  acc[0] = make_float4(0.f, 0.f, 0.f, 0.f);
  acc[1] = make_float4(0.f, 0.f, 0.f, 0.f);
}

// Grid (ceil(Sq / kRows), Hq, B).
template <class Element, int kHeadDim, class Params>
__global__ void __launch_bounds__(BwdRowKernel<kHeadDim>::kThreads)
    flash_bwd_convert_dq(const __grid_constant__ Params p) {
  using Rows = BwdRowKernel<kHeadDim>;
  const int row = blockIdx.x * Rows::kRows + threadIdx.x / Rows::kThreadsPerRow;
  const int col = (threadIdx.x % Rows::kThreadsPerRow) * 8;
  const int head = blockIdx.y, b = blockIdx.z;
  if (row >= p.seqlen_q) return;
  const float* acc = p.dq_accum + ((int64_t(b) * p.heads_q + head) * p.seqlen_q_padded + row) * kHeadDim + col;
  cutlass::Array<Element, 8> out;
#pragma unroll
  for (int e = 0; e < 8; ++e) out[e] = Element(acc[e] * p.scale);
  Element* dq = static_cast<Element*>(const_cast<void*>(p.grad_q.data)) + b * p.grad_q.stride_batch +
                head * p.grad_q.stride_head + row * p.grad_q.stride_seq + col;
  *reinterpret_cast<cutlass::Array<Element, 8>*>(dq) = out;
}

}  // namespace sdpa
