// wgmma helpers for the sm90 kernels: one warpgroup-wide GEMM call, and S's accumulator reused as the
// register A operand of the next GEMM.
#pragma once

#include <cute/tensor.hpp>
#include <cute/arch/mma_sm90_gmma.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>

namespace sdpa {
namespace sm90 {

// acc (+)= A B over every k-block, issued as one wgmma batch (committed as one group) and, with kWait, waited
// for. kRegisterA: A lives in registers (the RS form; otherwise A is a shared-memory descriptor). The fences
// keep the compiler from moving register reads or writes of the operands across the asynchronous
// instructions; without kWait the caller waits (warpgroup_wait) and fences acc itself, and must leave A and
// acc alone until then.
template <bool kZeroInit, bool kRegisterA, bool kWait = true, class TiledMma, class TensorA, class TensorB,
          class TensorC>
__device__ __forceinline__ void gemm(TiledMma& mma, TensorA const& a, TensorB const& b, TensorC& acc) {
  using namespace cute;
  if constexpr (kRegisterA) warpgroup_fence_operand(const_cast<TensorA&>(a));
  warpgroup_fence_operand(acc);
  warpgroup_arrive();
  mma.accumulate_ = kZeroInit ? GMMA::ScaleOut::Zero : GMMA::ScaleOut::One;
#pragma unroll
  for (int k = 0; k < size<2>(a); ++k) {
    cute::gemm(mma, a(_, _, k), b(_, _, k), acc);
    mma.accumulate_ = GMMA::ScaleOut::One;
  }
  warpgroup_commit_batch();
  if constexpr (kWait) {
    warpgroup_wait<0>();
    warpgroup_fence_operand(acc);
    if constexpr (kRegisterA) warpgroup_fence_operand(const_cast<TensorA&>(a));
  }
}

// wgmma's accumulator ((2, 2, N / 8), MMA_M, MMA_N) as the 16-bit A operand of a k16 wgmma, ((2, 2, 2),
// MMA_M, (N / 16, MMA_N)): a k-block takes two groups of 8 columns, in the order the A registers want them
// (column pair, row half, column group), which is the accumulator's own order.
template <class Layout>
__device__ __forceinline__ auto acc_as_a_operand(Layout acc) {
  using namespace cute;
  auto l = logical_divide(get<0>(acc), Shape<Underscore, Underscore, _2>{});  // (2, 2, (2, N / 16))
  return make_layout(make_layout(get<0>(l), get<1>(l), get<2, 0>(l)), get<1>(acc),
                     make_layout(get<2, 1>(l), get<2>(acc)));
}

}  // namespace sm90
}  // namespace sdpa
