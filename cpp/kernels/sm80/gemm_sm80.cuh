// sm80 building blocks shared by the forward and (next) the backward: global views and predicated tile
// loads, the two GEMM shapes of attention on mma.sync (smem x smem, registers x smem), and the register
// re-read that feeds P to the second GEMM without going through shared memory.
#pragma once

#include <cstdint>
#include <type_traits>

#include <cute/tensor.hpp>
#include <cutlass/array.h>
#include <cutlass/numeric_conversion.h>

namespace sdpa {
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

// convert_fragment into an existing fragment of the same layout (one that outlives the call, such as the
// A operand an asynchronous GEMM reads later).
template <class TensorF, class TensorT>
__device__ __forceinline__ void convert_fragment_into(TensorF const& src, TensorT& dst) {
  using From = typename TensorF::value_type;
  using To = typename std::remove_reference_t<TensorT>::value_type;
  constexpr int kN = decltype(size(src))::value;
  cutlass::NumericArrayConverter<To, From, kN> convert;
  *reinterpret_cast<cutlass::Array<To, kN>*>(dst.data()) =
      convert(*reinterpret_cast<cutlass::Array<From, kN> const*>(src.data()));
}

}  // namespace sm80
}  // namespace sdpa
