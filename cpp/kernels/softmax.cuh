// Online softmax over MMA accumulator fragments (Milakov & Gimelshein 2018; FlashAttention-2).
//
// Scores arrive as a (rows, cols) fp32 view of one thread's accumulator registers. A row of the block is
// spread over the four lanes of a quad (the sm80 16x8 C fragment gives each lane two adjacent columns of
// every 8), so row statistics are reduced with two xor-shuffles and stay inside the warp.
//
// The kernel hands over x and a constant c > 0 with logit * log2(e) = x * c, so each exponent is one FMA
// plus ex2: exp(logit - max_logit) = 2^(x * c - max_x * c). Maxima are tracked on x, which is why c must be
// positive; folding the softmax scale into c saves a multiply per score for bias-free traits.
#pragma once

#include <cute/tensor.hpp>
#include <math_constants.h>

namespace sdpa {

// ex2.approx directly: exp2f() without --use_fast_math adds range fixups we do not need (-inf -> +0 is
// already exact here).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float quad_allreduce_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
}

__device__ __forceinline__ float quad_allreduce_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 2);
  return v + __shfl_xor_sync(0xffffffffu, v, 1);
}

// The fp32 accumulator layout viewed as (rows, columns), rows first, so row r of the view is one query row:
// mma.sync's 16x8 atom ((2, 2), MMA_M, MMA_N) -> ((2, MMA_M), (2, MMA_N)); wgmma's 64xN atom
// ((2, 2, N / 8), MMA_M, MMA_N) -> ((2, MMA_M), (2, N / 8, MMA_N)). Both give a thread two adjacent columns
// per group and rows r and r + 8 of a quad, so the quad reductions below serve both.
template <class Layout>
__device__ __forceinline__ auto acc_rowcol_layout(Layout acc) {
  using namespace cute;
  static_assert(decltype(rank(acc))::value == 3, "expects an MMA C-fragment layout");
  if constexpr (decltype(rank<0>(acc))::value == 3) {  // wgmma: (column pair, row half, column group)
    return make_layout(make_layout(get<0, 1>(acc), get<1>(acc)),
                       make_layout(get<0, 0>(acc), get<0, 2>(acc), get<2>(acc)));
  } else {
    auto l = logical_divide(acc, Shape<_2>{});  // mode 0 as (column pair, row half)
    return make_layout(make_layout(get<0, 1>(l), get<1>(l)), make_layout(get<0, 0>(l), get<2>(l)));
  }
}

template <class Tensor>
__device__ __forceinline__ auto acc_rowcol(Tensor&& t) {
  return cute::make_tensor(t.data(), acc_rowcol_layout(t.layout()));
}

template <int kNRows>
struct OnlineSoftmax {
  float row_max[kNRows];
  float row_sum[kNRows];  // per-lane partial sums; the quad is reduced once, in finalize()

  __device__ __forceinline__ OnlineSoftmax() {
#pragma unroll
    for (int r = 0; r < kNRows; ++r) {
      row_max[r] = -CUDART_INF_F;
      row_sum[r] = 0.0f;
    }
  }

  // Folds one key tile into the running statistics: S (rows x tile cols) becomes P = exp(logit - max) in
  // place and O (rows x head dim) is rescaled to the new max. A row that has seen only -inf keeps max -inf
  // and exponentiates against 0 instead, so it yields zeros, never NaN.
  template <class TensorS, class TensorO>
  __device__ __forceinline__ void update(TensorS& s, TensorO& o, float c) {
    float correction[kNRows];
    update_scores(s, c, correction);
    rescale(o, correction);
  }

  // update() without touching O: the factor each row of O must be scaled by goes to `correction`, for a
  // kernel whose O is still being written by an asynchronous GEMM (sm90) to apply later with rescale().
  template <class TensorS>
  __device__ __forceinline__ void update_scores(TensorS& s, float c, float (&correction)[kNRows]) {
    using namespace cute;
    static_assert(decltype(size<0>(s))::value == kNRows, "row count mismatch");
#pragma unroll
    for (int r = 0; r < kNRows; ++r) {
      float tile_max = row_max[r];
#pragma unroll
      for (int k = 0; k < size<1>(s); ++k) tile_max = fmaxf(tile_max, s(r, k));
      tile_max = quad_allreduce_max(tile_max);
      // A finite but huge negative max (an additive mask of finfo(bf16/fp32).min) overflows to -inf once
      // scaled; -inf - -inf would be NaN. Such scores are masked like -inf: the row stays empty so far.
      const float scaled_max = tile_max * c;
      const float max_c = scaled_max == -CUDART_INF_F ? 0.0f : scaled_max;
      correction[r] = fast_exp2(row_max[r] * c - max_c);  // 0 while the old max is -inf
      row_max[r] = tile_max;
      row_sum[r] *= correction[r];
      float sum = 0.0f;
#pragma unroll
      for (int k = 0; k < size<1>(s); ++k) {
        const float p = fast_exp2(fmaf(s(r, k), c, -max_c));
        s(r, k) = p;
        sum += p;
      }
      row_sum[r] += sum;
    }
  }

  template <class TensorO>
  __device__ __forceinline__ static void rescale(TensorO& o, float const (&correction)[kNRows]) {
    using namespace cute;
#pragma unroll
    for (int r = 0; r < kNRows; ++r) {
#pragma unroll
      for (int k = 0; k < size<1>(o); ++k) o(r, k) *= correction[r];
    }
  }

  // Normalizes O and returns each row's natural-log LSE. Rows that kept no key at all (sum 0) get O = 0
  // and LSE = -inf. A NaN score makes the sum NaN and propagates to the row's output, as in PyTorch
  // (fmaxf skips NaN, so the max alone cannot tell such a row from an empty one).
  template <class TensorO>
  __device__ __forceinline__ void finalize(TensorO& o, float c, float (&lse)[kNRows]) {
    using namespace cute;
    constexpr float kLn2 = 0.6931471805599453f;
#pragma unroll
    for (int r = 0; r < kNRows; ++r) {
      const float sum = quad_allreduce_sum(row_sum[r]);
      const bool empty = sum == 0.0f;
      const float inv = empty ? 0.0f : 1.0f / sum;
      lse[r] = empty ? -CUDART_INF_F : row_max[r] * c * kLn2 + logf(sum);
#pragma unroll
      for (int k = 0; k < size<1>(o); ++k) o(r, k) *= inv;
    }
  }
};

}  // namespace sdpa
