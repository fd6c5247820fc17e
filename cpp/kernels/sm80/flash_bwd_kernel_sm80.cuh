// FlashAttention-2-style backward for sm80+ (mma.sync), generic over a bias trait, in three kernels:
//   flash_bwd_preprocess_sm80   rowsum(dO * O) per query row, and zeroed fp32 dQ accumulators
//   flash_bwd_dkdv_kernel_sm80  one block per (key block, kv head, batch): dK, dV, and dQ by atomics
//   flash_bwd_convert_dq_sm80   dQ = scale * accumulator, in the input dtype and the caller's strides
// or, in deterministic mode, the dK/dV kernel without dQ and flash_bwd_dq_kernel_sm80 (its own file).
// The bias reaches the backward only through the same ScoreMod as the forward, and only the query
// blocks its q_tiles() name are visited.
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>
#include <cutlass/array.h>

#include "common/block_coord.hpp"
#include "common/params_bwd.hpp"
#include "common/score_mod.cuh"
#include "common/tile_range.hpp"
#include "sm80/gemm_sm80.cuh"
#include "sm80/kernel_traits_bwd_sm80.cuh"
#include "sm80/mainloop_bwd_sm80.cuh"

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
    flash_bwd_preprocess_sm80(const __grid_constant__ Params p) {
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

// The bias gradient is 0 wherever the mask removes every key of a tile: the query blocks outside `range`
// are never visited, so this key block's columns of those rows are zeroed here (every query head of the
// group; the columns stop at the sequence end).
template <class Element, int kBlockM, int kBlockN, class Params>
__device__ __forceinline__ void zero_bias_grad_outside(Params const& p, BlockCoord const& coord, int n_block,
                                                       TileRange const& range) {
  const int col0 = n_block * kBlockN;
  const int cols = min(kBlockN, p.seqlen_kv - col0);
  const int rows_before = min(range.begin * kBlockM, p.seqlen_q);  // empty range: begin may be past the end
  const int rows_after_first = range.empty() ? rows_before : min(range.end * kBlockM, p.seqlen_q);
  const int rows_skipped = rows_before + (p.seqlen_q - rows_after_first);
  for (int g = 0; g < coord.group; ++g) {
    Element* base = static_cast<Element*>(const_cast<void*>(p.grad_bias.data)) +
                    coord.batch * p.grad_bias.stride_batch + (coord.head_q_first + g) * p.grad_bias.stride_head +
                    col0;
    for (int e = threadIdx.x; e < rows_skipped * cols; e += blockDim.x) {
      const int r = e / cols;
      const int i = r < rows_before ? r : rows_after_first + (r - rows_before);
      base[int64_t(i) * p.grad_bias.stride_seq + e % cols] = Element(0.0f);
    }
  }
}

template <class Traits, class Bias, BiasForm kForm, bool kAtomicDq>
__global__ void __launch_bounds__(Traits::kNThreads, 1)
    flash_bwd_dkdv_kernel_sm80(const __grid_constant__ BwdParams<typename Bias::Params> p) {
  using namespace cute;
  using Element = typename Traits::Element;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kHeadDim = Traits::kHeadDim;
  const int n_block = blockIdx.x;
  const BlockCoord coord{static_cast<int>(blockIdx.z), static_cast<int>(blockIdx.y),
                         static_cast<int>(blockIdx.y) * p.group_size, p.group_size, p.seqlen_q, p.seqlen_kv};
  const TileRange range = Bias::q_tiles(PositionSpan::of_block(n_block, kBlockN, p.seqlen_kv), Traits::kBlockM,
                                        p.seqlen_q, p.seqlen_kv);

  typename Traits::TiledMmadKV mma_dkv;
  Tensor acc_dk = partition_fragment_C(mma_dkv, Shape<Int<kBlockN>, Int<kHeadDim>>{});
  Tensor acc_dv = partition_fragment_C(mma_dkv, Shape<Int<kBlockN>, Int<kHeadDim>>{});
  clear(acc_dk);
  clear(acc_dv);
  extern __shared__ __align__(128) char smem[];
  // Keys no query sees (e.g. upper-left causal with Sq < Skv) get zero gradients.
  if (!range.empty()) {
    sm80::MainloopBwdSm80<Traits>::template run<Bias, kForm, kAtomicDq>(p, coord, n_block, range, acc_dk, acc_dv, smem);
  }

  if constexpr (Bias::kKind == BiasKind::kDense) {
    if (p.grad_bias.data != nullptr) zero_bias_grad_outside<Element, Traits::kBlockM, kBlockN>(p, coord, n_block, range);
  }

  // dK carries the softmax scale of S = scale * Q K^T (dV does not). Rows past the sequence are dropped.
  for (int i = 0; i < size(acc_dk); ++i) acc_dk(i) *= p.scale;
  auto thr = mma_dkv.get_thread_slice(threadIdx.x);
  Tensor coord_kv = thr.partition_C(make_identity_tensor(Shape<Int<kBlockN>, Int<kHeadDim>>{}));
  const int rows_left = p.seqlen_kv - n_block * kBlockN;
  auto store = [&](TensorView const& view, auto const& acc) {
    Tensor g = local_tile(sm80::head_matrix<kHeadDim>(static_cast<Element*>(const_cast<void*>(view.data)),
                                                coord.batch * view.stride_batch + coord.head_kv * view.stride_head,
                                                view.stride_seq, p.seqlen_kv),
                          Shape<Int<kBlockN>, Int<kHeadDim>>{}, make_coord(n_block, 0));
    Tensor t = thr.partition_C(g);
    Tensor r = sm80::convert_fragment<Element>(acc);
#pragma unroll
    for (int i = 0; i < size(r); ++i) {
      if (get<0>(coord_kv(i)) < rows_left) t(i) = r(i);
    }
  };
  store(p.grad_k, acc_dk);
  store(p.grad_v, acc_dv);
}

// Grid (ceil(Sq / kRows), Hq, B).
template <class Element, int kHeadDim, class Params>
__global__ void __launch_bounds__(BwdRowKernel<kHeadDim>::kThreads)
    flash_bwd_convert_dq_sm80(const __grid_constant__ Params p) {
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
