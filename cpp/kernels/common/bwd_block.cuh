// Pieces of a backward block that do not depend on the arch or the MMA: the bias gradient's stores (from
// the registers that hold dS, or from its smem tile) and zeros, and the dK/dV epilogue. Each takes the
// tiling it works on (a TiledMma's C partition, a TiledCopy) from the caller.
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>
#include <cutlass/array.h>
#include <cutlass/numeric_conversion.h>

#include "common/block_coord.hpp"
#include "common/params.hpp"
#include "common/tile_range.hpp"

namespace sdpa {

// The bias gradient of one step is dS itself (the bias adds to the logit): each (b, h, i, j) is written once,
// by the one block that owns key j, so no accumulation is needed. From registers: ds is the (row, col) view
// of dS and coord_rc its coordinates in the (row0, col0) tile. Elements outside the sequence are skipped;
// masked elements have P = 0 and write 0.
template <class Element, class Params, class TensorDS, class TensorC>
__device__ __forceinline__ void store_bias_grad(Params const& p, TensorDS const& ds, TensorC const& coord_rc, int b,
                                                int head, int row0, int col0) {
  using namespace cute;
  Element* base = static_cast<Element*>(const_cast<void*>(p.grad_bias.data)) + b * p.grad_bias.stride_batch +
                  head * p.grad_bias.stride_head;
#pragma unroll
  for (int r = 0; r < size<0>(ds); ++r) {
    const int i = row0 + get<0>(coord_rc(r, 0));
    if (i >= p.seqlen_q) continue;
    Element* row = base + i * p.grad_bias.stride_seq;
#pragma unroll
    for (int k = 0; k < size<1>(ds); ++k) {
      const int j = col0 + get<1>(coord_rc(r, k));
      if (j < p.seqlen_kv) row[j] = Element(ds(r, k));
    }
  }
}

// The same from the dS tile in smem, in 16-byte row pieces by S2G (a TiledCopy of 16-byte vectors over the
// block's threads; coalesced, unlike the register stores above): for key blocks inside the sequence with
// 16-byte aligned rows. Rows past the sequence are skipped.
template <class Element, int kBlockM, int kBlockN, class S2G, class Params, class TensorS>
__device__ __forceinline__ void store_bias_grad_tile(Params const& p, TensorS const& sdS, int b, int head,
                                                     int m_block, int n_block) {
  using namespace cute;
  Element* base = static_cast<Element*>(const_cast<void*>(p.grad_bias.data)) + b * p.grad_bias.stride_batch +
                  head * p.grad_bias.stride_head;
  Tensor g = local_tile(make_tensor(make_gmem_ptr(base), make_shape(p.seqlen_q, p.seqlen_kv),
                                    make_stride(p.grad_bias.stride_seq, _1{})),
                        Shape<Int<kBlockM>, Int<kBlockN>>{}, make_coord(m_block, n_block));
  S2G s2g;
  auto thr = s2g.get_thread_slice(int(threadIdx.x));
  Tensor src = thr.partition_S(sdS);
  Tensor dst = thr.partition_D(g);
  Tensor rows = thr.partition_D(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{}));
  Tensor staged = make_tensor<Element>(shape(dst));
  copy(s2g, src, staged);
  const int rows_left = p.seqlen_q - m_block * kBlockM;
#pragma unroll
  for (int m = 0; m < size<1>(dst); ++m) {
    if (get<0>(rows(0, m, 0)) < rows_left) copy(s2g, staged(_, m, _), dst(_, m, _));
  }
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

// The block's epilogue: dK (times the softmax scale of S = scale * Q K^T; dV has none) and dV of key block
// n_block, from accumulators of TiledMma's C partition over (kBlockN, kHeadDim), in the input dtype. Rows
// past the sequence are dropped.
template <class Element, int kBlockN, int kHeadDim, class TiledMma, class Params, class TensorDK, class TensorDV>
__device__ __forceinline__ void store_dk_dv(Params const& p, BlockCoord const& coord, int n_block, TiledMma& mma,
                                           TensorDK& acc_dk, TensorDV const& acc_dv) {
  using namespace cute;
  for (int i = 0; i < size(acc_dk); ++i) acc_dk(i) *= p.scale;
  auto thr = mma.get_thread_slice(int(threadIdx.x));
  Tensor coord_kv = thr.partition_C(make_identity_tensor(Shape<Int<kBlockN>, Int<kHeadDim>>{}));
  const int rows_left = p.seqlen_kv - n_block * kBlockN;
  auto store = [&](TensorView const& view, auto const& acc) {
    Element* base = static_cast<Element*>(const_cast<void*>(view.data)) + coord.batch * view.stride_batch +
                    coord.head_kv * view.stride_head;
    Tensor g = local_tile(make_tensor(make_gmem_ptr(base), make_shape(p.seqlen_kv, Int<kHeadDim>{}),
                                      make_stride(view.stride_seq, _1{})),
                          Shape<Int<kBlockN>, Int<kHeadDim>>{}, make_coord(n_block, 0));
    Tensor t = thr.partition_C(g);
    constexpr int kN = decltype(size(acc))::value;
    cutlass::NumericArrayConverter<Element, float, kN> convert;
    const cutlass::Array<Element, kN> r = convert(*reinterpret_cast<cutlass::Array<float, kN> const*>(acc.data()));
#pragma unroll
    for (int i = 0; i < kN; ++i) {
      if (get<0>(coord_kv(i)) < rows_left) t(i) = r[i];
    }
  };
  store(p.grad_k, acc_dk);
  store(p.grad_v, acc_dv);
}

}  // namespace sdpa
