// Host side of the sm80 forward kernel: AttentionProblem + BiasDesc -> kernel params -> launch.
//
// Included only by the generated explicit-instantiation translation units, one per (bias, dtype, head dim).
// No allocation and no synchronization, so a launch can be captured into a CUDA graph.
#pragma once

#include <cmath>
#include <string>

#include <cuda_runtime.h>
#include <cutlass/numeric_types.h>

#include "bias/bias_trait.cuh"
#include "launch_fwd.hpp"
#include "sm80/flash_fwd_kernel_sm80.cuh"
#include "sm80/kernel_traits_sm80.cuh"

namespace sdpa {

template <DType kDType>
struct CuteElement;
template <>
struct CuteElement<DType::kFloat16> {
  using type = cutlass::half_t;
};
template <>
struct CuteElement<DType::kBFloat16> {
  using type = cutlass::bfloat16_t;
};

// Whether to run the trait's split form: it folds the scale into the exponent, so it needs scale > 0.
template <class Bias>
bool use_split_form(const AttentionProblem& problem) {
  return Bias::split_holds(problem.seqlen_q, problem.seqlen_kv) && problem.scale > 0.0f &&
         std::isfinite(problem.scale);
}

template <class Bias>
FwdParamsSm80<typename Bias::Params> make_fwd_params_sm80(const AttentionProblem& problem, const BiasDesc& bias,
                                                          bool split) {
  constexpr float kLog2e = 1.4426950408889634f;
  FwdParamsSm80<typename Bias::Params> p;
  p.q = problem.q.data;
  p.k = problem.k.data;
  p.v = problem.v.data;
  p.o = const_cast<void*>(problem.o.data);
  p.lse = problem.lse;
  p.q_batch_stride = problem.q.stride_batch;
  p.q_head_stride = problem.q.stride_head;
  p.q_row_stride = problem.q.stride_seq;
  p.k_batch_stride = problem.k.stride_batch;
  p.k_head_stride = problem.k.stride_head;
  p.k_row_stride = problem.k.stride_seq;
  p.v_batch_stride = problem.v.stride_batch;
  p.v_head_stride = problem.v.stride_head;
  p.v_row_stride = problem.v.stride_seq;
  p.o_batch_stride = problem.o.stride_batch;
  p.o_head_stride = problem.o.stride_head;
  p.o_row_stride = problem.o.stride_seq;
  p.seqlen_q = problem.seqlen_q;
  p.seqlen_kv = problem.seqlen_kv;
  p.heads_q = problem.heads_q;
  p.group_size = problem.group_size();
  p.scale = problem.scale;
  p.inv_scale = 1.0f / problem.scale;
  // Folding the scale into the exponent (one FMA per score) is only valid for a positive finite scale,
  // and only without an additive bias, which must be added to the scaled score, or in the split form.
  const bool fold = (!Bias::kHasValue || split) && problem.scale > 0.0f && std::isfinite(problem.scale);
  p.prescale = !fold;
  p.softmax_c = fold ? problem.scale * kLog2e : kLog2e;
  p.bias = Bias::make_params(bias);
  return p;
}

template <class Traits, class Bias, BiasForm kForm>
Status launch_kernel_sm80(const AttentionProblem& problem, const FwdParamsSm80<typename Bias::Params>& params) {
  auto kernel = flash_fwd_kernel_sm80<Traits, Bias, kForm>;
  constexpr int kStagedBytes = kForm == BiasForm::kStaged
      ? Bias::template staged_tile_bytes<typename Traits::Element, Traits::kBlockM, Traits::kBlockN>() : 0;
  constexpr int kSmem = Traits::kSmemBytes + kStagedBytes;
  if (kSmem > 48 * 1024) {
    // Per-function attribute, cheap to set again; done every call so no static state needs a lock.
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
    if (err != cudaSuccess) {
      return Status::error(StatusCode::kCudaError,
                           std::string("launch_fwd_sm80: cudaFuncSetAttribute: ") + cudaGetErrorString(err));
    }
  }
  const int num_m_blocks = (problem.seqlen_q + Traits::kBlockM - 1) / Traits::kBlockM;
  const dim3 grid(num_m_blocks, problem.heads_q, problem.batch);
  kernel<<<grid, Traits::kNThreads, kSmem, static_cast<cudaStream_t>(problem.stream)>>>(params);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return Status::error(StatusCode::kCudaError, std::string("launch_fwd_sm80: ") + cudaGetErrorString(err));
  }
  return Status::success();
}

// Launches with an explicit Traits; launch_fwd_sm80 picks the tuned tile config, tests may pick others.
template <class Traits, class Bias>
Status launch_fwd_sm80_with_traits(const AttentionProblem& problem, const BiasDesc& bias) {
  if (problem.batch == 0 || problem.heads_q == 0 || problem.seqlen_q == 0) return Status::success();
  if constexpr (Bias::kSplittable) {
    if (use_split_form<Bias>(problem)) {
      return launch_kernel_sm80<Traits, Bias, BiasForm::kSplit>(problem, make_fwd_params_sm80<Bias>(problem, bias, true));
    }
  }
  const auto params = make_fwd_params_sm80<Bias>(problem, bias, false);
  if constexpr (Bias::kStagesTile) {
    if (Bias::stageable(params.bias)) return launch_kernel_sm80<Traits, Bias, BiasForm::kStaged>(problem, params);
  }
  return launch_kernel_sm80<Traits, Bias, BiasForm::kElementwise>(problem, params);
}

template <class Bias, DType kDType, int kHeadDim>
Status launch_fwd_sm80(const AttentionProblem& problem, const BiasDesc& bias) {
  using Config = TileConfigSm80For<kHeadDim, Bias>;
  using Traits = KernelTraitsSm80<typename CuteElement<kDType>::type, kHeadDim, Config>;
  return launch_fwd_sm80_with_traits<Traits, Bias>(problem, bias);
}

}  // namespace sdpa
