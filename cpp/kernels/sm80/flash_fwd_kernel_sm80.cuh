// FlashAttention-2-style forward kernel for sm80+ (mma.sync), generic over a bias trait.
//
// One thread block owns kBlockM query rows of one (batch, head) and walks the key tiles the bias lets it
// see, keeping O, the row max and the row sum on chip. All bias knowledge comes from the trait: which
// tiles to visit, which of them need per-element masking, and the per-element score.
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>
#include <cutlass/array.h>
#include <cutlass/numeric_conversion.h>
#include <math_constants.h>

#include "bias/tile_range.cuh"
#include "sm80/kernel_traits_sm80.cuh"
#include "softmax.cuh"

namespace sdpa {

template <class BiasParams>
struct FwdParamsSm80 {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* o = nullptr;
  float* lse = nullptr;  // optional, (B, Hq, Sq) contiguous
  int64_t q_batch_stride, q_head_stride, q_row_stride;
  int64_t k_batch_stride, k_head_stride, k_row_stride;
  int64_t v_batch_stride, v_head_stride, v_row_stride;
  int64_t o_batch_stride, o_head_stride, o_row_stride;
  int seqlen_q, seqlen_kv, heads_q, group_size;
  float scale;      // applied to Q K^T before any bias
  float inv_scale;  // 1 / scale, for the split form's column parts
  float softmax_c;  // the softmax sees x with logit * log2(e) = x * softmax_c, softmax_c > 0
  bool prescale;    // x = S * scale; otherwise (bias-free, scale > 0) x = S and the scale is in softmax_c
  BiasParams bias;
};

namespace sm80 {

using namespace cute;

// A (rows, kCols) row-major view of one (batch, head) of a (B, H, S, D) operand.
template <int kCols, class T>
__device__ __forceinline__ auto head_matrix(T* base, int64_t offset, int64_t row_stride, int rows) {
  return make_tensor(make_gmem_ptr(base + offset), make_shape(rows, Int<kCols>{}), make_stride(row_stride, _1{}));
}

// Async copy of one tile; rows at or past rows_left are zero-filled, never read. Tiles known to be full
// skip the predicates, which keeps row coordinates out of the registers of the steady-state loop.
template <bool kFull = false, class TiledCopy, class TS, class TD, class TC>
__device__ __forceinline__ void load_tile(TiledCopy const& tiled_copy, TS const& src, TD&& dst, TC const& coord,
                                          int rows_left) {
#pragma unroll
  for (int m = 0; m < size<1>(src); ++m) {
    const bool in_bounds = kFull || get<0>(coord(0, m, 0)) < rows_left;
    copy(tiled_copy.with(in_bounds), src(_, m, _), dst(_, m, _));
  }
}

// acc += A @ B^T with both operands in smem, loading k-slice i + 1 while slice i multiplies.
template <class TiledMma, class TC, class TA, class TB, class TSA, class TSB, class CopyA, class ThrCopyA, class CopyB,
          class ThrCopyB>
__device__ __forceinline__ void gemm_ss(TC& acc, TA& rA, TB& rB, TSA const& sA, TSB const& sB, TiledMma const& mma,
                                        CopyA const& copy_a, ThrCopyA const& thr_copy_a, CopyB const& copy_b,
                                        ThrCopyB const& thr_copy_b) {
  Tensor rA_view = thr_copy_a.retile_D(rA);
  Tensor rB_view = thr_copy_b.retile_D(rB);
  copy(copy_a, sA(_, _, _0{}), rA_view(_, _, _0{}));
  copy(copy_b, sB(_, _, _0{}), rB_view(_, _, _0{}));
#pragma unroll
  for (int i = 0; i < size<2>(rA); ++i) {
    if (i + 1 < size<2>(rA)) {
      copy(copy_a, sA(_, _, i + 1), rA_view(_, _, i + 1));
      copy(copy_b, sB(_, _, i + 1), rB_view(_, _, i + 1));
    }
    gemm(mma, rA(_, _, i), rB(_, _, i), acc);
  }
}

// acc += A @ B^T with A already in registers (P) and B in smem (V^T).
template <class TiledMma, class TC, class TA, class TB, class TSB, class CopyB, class ThrCopyB>
__device__ __forceinline__ void gemm_rs(TC& acc, TA const& rA, TB& rB, TSB const& sB, TiledMma const& mma,
                                        CopyB const& copy_b, ThrCopyB const& thr_copy_b) {
  Tensor rB_view = thr_copy_b.retile_D(rB);
  copy(copy_b, sB(_, _, _0{}), rB_view(_, _, _0{}));
#pragma unroll
  for (int i = 0; i < size<2>(rA); ++i) {
    if (i + 1 < size<2>(rA)) copy(copy_b, sB(_, _, i + 1), rB_view(_, _, i + 1));
    gemm(mma, rA(_, _, i), rB(_, _, i), acc);
  }
}

// The fp32 C fragment ((2, 2), M, N) of the 16x8 atom re-read as the A fragment ((2, 2, 2), M, N / 2) of
// the 16x8x16 atom: two neighbouring score atoms form one k-slice of P, so P never goes through smem.
template <class Layout>
__device__ __forceinline__ auto acc_as_a_operand(Layout acc) {
  auto l = logical_divide(acc, Shape<Underscore, Underscore, _2>{});
  return make_layout(make_layout(get<0>(l), get<2, 0>(l)), get<1>(l), get<2, 1>(l));
}

template <class To, class TensorF>
__device__ __forceinline__ auto convert_fragment(TensorF const& src) {
  using From = typename TensorF::value_type;
  constexpr int kN = decltype(size(src))::value;
  Tensor dst = make_tensor<To>(src.layout());
  cutlass::NumericArrayConverter<To, From, kN> convert;
  *reinterpret_cast<cutlass::Array<To, kN>*>(dst.data()) =
      convert(*reinterpret_cast<cutlass::Array<From, kN> const*>(src.data()));
  return dst;
}

// Turns raw scores S of key tile n into the softmax input x. Masked tiles evaluate the trait's score
// (causal mask and keys past seqlen_kv become -inf); unmasked tiles are known fully valid, so a bias-free
// trait does nothing there and an additive one only adds its value.
template <bool kMasked, class Element, class Bias, class TensorS, class TensorC, class Params>
__device__ __forceinline__ void apply_bias(TensorS& s, TensorC const& coord, Bias const& bias, Params const& p,
                                           int row0, int col0) {
  const bool prescale = Bias::kHasValue || p.prescale;  // additive biases need the true scaled score
  if (!kMasked && !prescale) return;
#pragma unroll
  for (int r = 0; r < size<0>(s); ++r) {
    const int i = row0 + get<0>(coord(r, 0));
    // Rows past seqlen_q are computed but never stored; clamping keeps a dense bias read in bounds.
    const int i_read = i < p.seqlen_q ? i : p.seqlen_q - 1;
#pragma unroll
    for (int k = 0; k < size<1>(s); ++k) {
      const int j = col0 + get<1>(coord(r, k));
      const float scaled = prescale ? s(r, k) * p.scale : s(r, k);
      if constexpr (kMasked) {
        s(r, k) = j >= p.seqlen_kv ? -CUDART_INF_F : bias.template score<Element>(scaled, i_read, j);
      } else if constexpr (Bias::kHasValue) {
        s(r, k) = scaled + bias.template value<Element>(i_read, j);
      } else {
        s(r, k) = scaled;
      }
    }
  }
}

// Split form (Bias::split_holds): the tile's accumulator starts at column_part(j) / scale instead of 0, so
// the tensor cores add Q K^T onto it and x = acc * scale comes out of the exponent's FMA as for a bias-free
// trait: ALiBi then costs nothing per score. The row parts are added to the LSE by the caller.
template <class Bias, class TensorS, class TensorC, class Params>
__device__ __forceinline__ void init_split_scores(TensorS& s, TensorC const& coord, Bias const& bias, Params const& p,
                                                  int row0, int col0) {
#pragma unroll
  for (int k = 0; k < size<1>(s); ++k) {
    const float column = bias.column_part(col0 + get<1>(coord(0, k)), row0) * p.inv_scale;
#pragma unroll
    for (int r = 0; r < size<0>(s); ++r) s(r, k) = column;
  }
}

// Staged form (BiasForm::kStaged), unmasked tiles only: x = S * scale + the bias value read from the tile
// the trait staged in shared memory with this tile's K.
template <class Element, int kBlockN, class Bias, class TensorS, class TensorC, class Params>
__device__ __forceinline__ void apply_staged_bias(TensorS& s, TensorC const& coord, Bias const& bias,
                                                  Params const& p, const char* staged) {
#pragma unroll
  for (int r = 0; r < size<0>(s); ++r) {
    const int row = get<0>(coord(r, 0));
#pragma unroll
    for (int k = 0; k < size<1>(s); ++k) {
      s(r, k) = fmaf(s(r, k), p.scale, bias.template staged_value<Element, kBlockN>(staged, row, get<1>(coord(r, k))));
    }
  }
}

// The element mask alone (causal and keys past seqlen_kv), for masked tiles of the split form.
template <class Bias, class TensorS, class TensorC, class Params>
__device__ __forceinline__ void mask_scores(TensorS& s, TensorC const& coord, Bias const& bias, Params const& p,
                                            int row0, int col0) {
#pragma unroll
  for (int r = 0; r < size<0>(s); ++r) {
    const int i = row0 + get<0>(coord(r, 0));
#pragma unroll
    for (int k = 0; k < size<1>(s); ++k) {
      const int j = col0 + get<1>(coord(r, k));
      if (j >= p.seqlen_kv || bias.masked(i, j)) s(r, k) = -CUDART_INF_F;
    }
  }
}

// Writes this block's normalized O (through smem, for 16-byte global stores) and, if asked, its LSE.
template <class Traits, class Params, class TensorO, class TensorC, class TiledMma, int kNRows>
__device__ __forceinline__ void store_output(Params const& p, TensorO const& acc_o, TensorC const& coord_rc,
                                             float (&lse)[kNRows], typename Traits::Element* smem, TiledMma const& mma,
                                             int m_block, int b, int h) {
  using Element = typename Traits::Element;
  constexpr int kBlockM = Traits::kBlockM;
  const int tidx = threadIdx.x;
  Tensor rO = convert_fragment<Element>(acc_o);
  Tensor sO = make_tensor(make_smem_ptr(smem), typename Traits::SmemLayoutO{});
  auto r2s = make_tiled_copy_C(typename Traits::SmemCopyAtomO{}, mma);
  auto r2s_thr = r2s.get_thread_slice(tidx);
  __syncthreads();  // every warp is done reading Q, whose smem O now takes
  copy(r2s, r2s_thr.retile_S(rO), r2s_thr.partition_D(sO));
  __syncthreads();

  Tensor mO = head_matrix<Traits::kHeadDim>(static_cast<Element*>(p.o),
                                            b * p.o_batch_stride + h * p.o_head_stride, p.o_row_stride, p.seqlen_q);
  Tensor gO = local_tile(mO, Shape<Int<kBlockM>, Int<Traits::kHeadDim>>{}, make_coord(m_block, 0));
  typename Traits::GmemTiledCopyO s2g;
  auto s2g_thr = s2g.get_thread_slice(tidx);
  Tensor tOsO = s2g_thr.partition_S(sO);
  Tensor tOgO = s2g_thr.partition_D(gO);
  Tensor tOcO = s2g_thr.partition_D(make_identity_tensor(Shape<Int<kBlockM>, Int<Traits::kHeadDim>>{}));
  Tensor tOrO = make_tensor<Element>(shape(tOgO));
  copy(s2g, tOsO, tOrO);
  const int rows_left = p.seqlen_q - m_block * kBlockM;
#pragma unroll
  for (int m = 0; m < size<1>(tOgO); ++m) {
    if (get<0>(tOcO(0, m, 0)) < rows_left) copy(s2g, tOrO(_, m, _), tOgO(_, m, _));
  }

  if (p.lse == nullptr) return;
  float* lse_head = p.lse + (int64_t(b) * p.heads_q + h) * p.seqlen_q + m_block * kBlockM;
#pragma unroll
  for (int r = 0; r < kNRows; ++r) {
    const int row = get<0>(coord_rc(r, 0));
    // A row lives in the four lanes of a quad; the one holding column 0 writes it.
    if (get<1>(coord_rc(r, 0)) == 0 && row < rows_left) lse_head[row] = lse[r];
  }
}

// A block whose rows see no key at all (e.g. lower-right causal with Sq > Skv) writes O = 0, LSE = -inf.
template <class Traits, class Params>
__device__ __forceinline__ void store_empty(Params const& p, int m_block, int b, int h) {
  using Element = typename Traits::Element;
  constexpr int kBlockM = Traits::kBlockM;
  Tensor mO = head_matrix<Traits::kHeadDim>(static_cast<Element*>(p.o),
                                            b * p.o_batch_stride + h * p.o_head_stride, p.o_row_stride, p.seqlen_q);
  Tensor gO = local_tile(mO, Shape<Int<kBlockM>, Int<Traits::kHeadDim>>{}, make_coord(m_block, 0));
  typename Traits::GmemTiledCopyO s2g;
  auto s2g_thr = s2g.get_thread_slice(threadIdx.x);
  Tensor tOgO = s2g_thr.partition_D(gO);
  Tensor tOcO = s2g_thr.partition_D(make_identity_tensor(Shape<Int<kBlockM>, Int<Traits::kHeadDim>>{}));
  Tensor zeros = make_tensor<Element>(shape(tOgO));
  clear(zeros);
  const int rows_left = p.seqlen_q - m_block * kBlockM;
#pragma unroll
  for (int m = 0; m < size<1>(tOgO); ++m) {
    if (get<0>(tOcO(0, m, 0)) < rows_left) copy(s2g, zeros(_, m, _), tOgO(_, m, _));
  }
  if (p.lse == nullptr) return;
  float* lse_head = p.lse + (int64_t(b) * p.heads_q + h) * p.seqlen_q + m_block * kBlockM;
  for (int row = threadIdx.x; row < kBlockM && row < rows_left; row += blockDim.x) lse_head[row] = -CUDART_INF_F;
}

}  // namespace sm80

// kForm: how this launch evaluates the bias (BiasForm), chosen by the launcher for the problem.
template <class Traits, class Bias, BiasForm kForm>
__global__ void __launch_bounds__(Traits::kNThreads, 1)
    flash_fwd_kernel_sm80(const __grid_constant__ FwdParamsSm80<typename Bias::Params> p) {
  using namespace cute;
  using namespace sm80;
  using Element = typename Traits::Element;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kHeadDim = Traits::kHeadDim;
  constexpr bool kSplit = kForm == BiasForm::kSplit;
  constexpr bool kStaged = kForm == BiasForm::kStaged;

  // Reverse order: causal blocks at the bottom of the matrix have the most tiles, so they start first.
  const int m_block = gridDim.x - 1 - blockIdx.x;
  const int h = blockIdx.y;
  const int b = blockIdx.z;
  const int tidx = threadIdx.x;
  const TileRange range = Bias::kv_tiles(m_block, kBlockM, kBlockN, p.seqlen_q, p.seqlen_kv);
  if (range.empty()) {
    store_empty<Traits>(p, m_block, b, h);
    return;
  }
  const Bias bias(p.bias, b, h, p.seqlen_q, p.seqlen_kv);
  const int h_kv = h / p.group_size;

  extern __shared__ __align__(128) char smem[];
  Element* smem_q = reinterpret_cast<Element*>(smem);
  Tensor sQ = make_tensor(make_smem_ptr(smem_q), typename Traits::SmemLayoutQ{});
  Tensor sK = make_tensor(make_smem_ptr(smem_q + Traits::kSmemQElems), typename Traits::SmemLayoutKV{});
  Element* smem_v = smem_q + Traits::kSmemQElems + Traits::kSmemKVElems;
  Tensor sV = make_tensor(make_smem_ptr(smem_v), typename Traits::SmemLayoutKV{});
  Tensor sVt = make_tensor(make_smem_ptr(smem_v), typename Traits::SmemLayoutVt{});
  Tensor sVtNoSwizzle = make_tensor(make_smem_ptr(smem_v), typename Traits::SmemLayoutVtNoSwizzle{});
  char* smem_bias = reinterpret_cast<char*>(smem_v + Traits::kSmemKVElems);  // kStaged only

  const Element* q_ptr = static_cast<const Element*>(p.q);
  const Element* k_ptr = static_cast<const Element*>(p.k);
  const Element* v_ptr = static_cast<const Element*>(p.v);
  Tensor gQ = local_tile(head_matrix<kHeadDim>(q_ptr, b * p.q_batch_stride + h * p.q_head_stride, p.q_row_stride,
                                               p.seqlen_q),
                         Shape<Int<kBlockM>, Int<kHeadDim>>{}, make_coord(m_block, 0));
  Tensor gK = local_tile(head_matrix<kHeadDim>(k_ptr, b * p.k_batch_stride + h_kv * p.k_head_stride,
                                               p.k_row_stride, p.seqlen_kv),
                         Shape<Int<kBlockN>, Int<kHeadDim>>{}, make_coord(_, 0));
  Tensor gV = local_tile(head_matrix<kHeadDim>(v_ptr, b * p.v_batch_stride + h_kv * p.v_head_stride,
                                               p.v_row_stride, p.seqlen_kv),
                         Shape<Int<kBlockN>, Int<kHeadDim>>{}, make_coord(_, 0));

  typename Traits::GmemTiledCopyQKV g2s;
  auto g2s_thr = g2s.get_thread_slice(tidx);
  Tensor tQgQ = g2s_thr.partition_S(gQ);
  Tensor tQsQ = g2s_thr.partition_D(sQ);
  Tensor tKgK = g2s_thr.partition_S(gK);
  Tensor tKsK = g2s_thr.partition_D(sK);
  Tensor tVgV = g2s_thr.partition_S(gV);
  Tensor tVsV = g2s_thr.partition_D(sV);
  Tensor tQcQ = g2s_thr.partition_S(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));
  Tensor tKVc = g2s_thr.partition_S(make_identity_tensor(Shape<Int<kBlockN>, Int<kHeadDim>>{}));
  auto load_k = [&](int n, auto full) {
    load_tile<decltype(full)::value>(g2s, tKgK(_, _, _, n), tKsK, tKVc, p.seqlen_kv - n * kBlockN);
  };
  auto load_v = [&](int n, auto full) {
    load_tile<decltype(full)::value>(g2s, tVgV(_, _, _, n), tVsV, tKVc, p.seqlen_kv - n * kBlockN);
  };
  // The staged bias tile travels with K: unmasked tiles only (they lie inside the key range).
  auto stage_bias = [&](int n) {
    if constexpr (kStaged) {
      if (!range.needs_mask(n)) {
        bias.template stage_tile<Element, kBlockM, kBlockN, Traits::kNThreads>(smem_bias, m_block * kBlockM,
                                                                               n * kBlockN, p.seqlen_q, tidx);
      }
    }
  };

  typename Traits::TiledMma mma;
  auto thr_mma = mma.get_thread_slice(tidx);
  Tensor tSrQ = thr_mma.partition_fragment_A(sQ);
  Tensor tSrK = thr_mma.partition_fragment_B(sK);
  Tensor tOrVt = thr_mma.partition_fragment_B(sVtNoSwizzle);
  Tensor acc_o = partition_fragment_C(mma, Shape<Int<kBlockM>, Int<kHeadDim>>{});
  clear(acc_o);
  Tensor acc_o_rc = acc_rowcol(acc_o);

  auto s2r_q = make_tiled_copy_A(typename Traits::SmemCopyAtom{}, mma);
  auto s2r_q_thr = s2r_q.get_thread_slice(tidx);
  Tensor tSsQ = s2r_q_thr.partition_S(sQ);
  auto s2r_k = make_tiled_copy_B(typename Traits::SmemCopyAtom{}, mma);
  auto s2r_k_thr = s2r_k.get_thread_slice(tidx);
  Tensor tSsK = s2r_k_thr.partition_S(sK);
  auto s2r_v = make_tiled_copy_B(typename Traits::SmemCopyAtomTransposed{}, mma);
  auto s2r_v_thr = s2r_v.get_thread_slice(tidx);
  Tensor tOsVt = s2r_v_thr.partition_S(sVt);

  // (row, col) inside the score tile of every accumulator element this thread holds.
  Tensor coord_rc = acc_rowcol(thr_mma.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{})));
  constexpr int kNRows = decltype(size<0>(acc_o_rc))::value;
  OnlineSoftmax<kNRows> softmax;

  load_tile(g2s, tQgQ, tQsQ, tQcQ, p.seqlen_q - m_block * kBlockM);
  load_k(range.end - 1, cute::false_type{});
  stage_bias(range.end - 1);
  cp_async_fence();

  // One key tile: V's load overlaps Q K^T, and the next K's load overlaps softmax and P V.
  auto step = [&](int n, auto masked) {
    Tensor acc_s = partition_fragment_C(mma, Shape<Int<kBlockM>, Int<kBlockN>>{});
    Tensor s = acc_rowcol(acc_s);
    if constexpr (kSplit) {
      init_split_scores(s, coord_rc, bias, p, m_block * kBlockM, n * kBlockN);
    } else {
      clear(acc_s);
    }
    cp_async_wait<0>();
    __syncthreads();  // K(n) has landed, and every warp is done reading V(n + 1)
    // An unmasked tile is full by the TileRange contract; only masked ones need row predicates.
    load_v(n, cute::bool_constant<!decltype(masked)::value>{});
    cp_async_fence();
    gemm_ss(acc_s, tSrQ, tSrK, tSsQ, tSsK, mma, s2r_q, s2r_q_thr, s2r_k, s2r_k_thr);

    if constexpr (kSplit) {
      if constexpr (decltype(masked)::value) mask_scores(s, coord_rc, bias, p, m_block * kBlockM, n * kBlockN);
    } else if constexpr (kStaged && !decltype(masked)::value) {
      apply_staged_bias<Element, kBlockN>(s, coord_rc, bias, p, smem_bias);
    } else {
      apply_bias<decltype(masked)::value, Element>(s, coord_rc, bias, p, m_block * kBlockM, n * kBlockN);
    }

    cp_async_wait<0>();
    __syncthreads();  // V(n) has landed, and every warp is done reading K(n)
    if (n > range.begin) {
      // n - 1 < end - 1 <= the last key tile, the only one that can be partial.
      load_k(n - 1, cute::true_type{});
      stage_bias(n - 1);  // every warp is past apply_*_bias(n), so the staged tile is free
      cp_async_fence();
    }
    softmax.update(s, acc_o_rc, p.softmax_c);

    Tensor rP = convert_fragment<Element>(acc_s);
    Tensor tOrP = make_tensor(rP.data(), acc_as_a_operand(rP.layout()));
    gemm_rs(acc_o, tOrP, tOrVt, tOsVt, mma, s2r_v, s2r_v_thr);
  };

  // Last tile first: causal diagonals and the partial last tile sit at the end of the range, so the walk
  // starts with the masked tiles and then settles into a loop with no mask code at all. Separate loops
  // (rather than a per-tile branch) keep the compiler from merging the two paths into predicated code.
  int n = range.end - 1;
  while (n >= range.begin) {
    for (; n >= range.begin && range.needs_mask(n); --n) step(n, cute::true_type{});
    for (; n >= range.begin && !range.needs_mask(n); --n) step(n, cute::false_type{});
  }

  float lse[kNRows];
  softmax.finalize(acc_o_rc, p.softmax_c, lse);
  if constexpr (kSplit) {  // the row parts init_split_scores left out (-inf stays -inf)
#pragma unroll
    for (int r = 0; r < kNRows; ++r) lse[r] += bias.row_part(m_block * kBlockM + get<0>(coord_rc(r, 0)), m_block * kBlockM);
  }
  store_output<Traits>(p, acc_o, coord_rc, lse, smem_q, mma, m_block, b, h);
}

}  // namespace sdpa
