// Host side of the sm90 forward family: AttentionProblem + BiasDesc -> FwdParams -> launch. Included only by
// the generated translation units (compiled for sm_90a).
#pragma once

#include <cstddef>

#include "bias/bias_trait.cuh"
#include "common/launch_fwd.cuh"
#include "common/problem_checks.hpp"
#include "sm80/cute_element.hpp"
#include "sm90/flash_fwd_kernel_sm90.cuh"
#include "sm90/fwd_sm90.hpp"
#include "sm90/kernel_traits_sm90.cuh"
#include "sm90/tma_fwd_sm90.cuh"

namespace sdpa {

namespace sm90 {

// The kernel this family launches (common/launch_fwd.cuh): warp-specialized, its own shared-memory plan.
struct FwdKernels {
  static constexpr const char* kName = "launch_fwd_sm90";
  template <class Traits, class Bias, BiasForm kForm, bool kVarlen>
  static auto kernel() {
    return flash_fwd_kernel_sm90<Traits, Bias, kForm, kVarlen>;
  }
  // A dense problem's Q/K/V come by TMA (descriptors built here, on the host); a variable-length batch keeps
  // cp.async.
  template <class Traits, bool kVarlen, class P>
  static auto kernel_params(const AttentionProblem& problem, const P& params) {
    if constexpr (kVarlen) {
      return FwdParamsSm90<P, TmaFor<Traits, kVarlen>>{params, {}};
    } else {
      return FwdParamsSm90<P, TmaFor<Traits, kVarlen>>{params, TmaFwd<Traits>::make(problem)};
    }
  }
  template <class Traits, class Bias, BiasForm kForm>
  static constexpr int smem_bytes() {
    constexpr int kBytes = MainloopFwdSm90<Traits, false>::smem_bytes(
        ScoreMod<Bias, kForm>::template smem_bytes<typename Traits::Element, Traits::kBlockM, Traits::kBlockN>());
    static_assert(kBytes <= 227 * 1024, "more shared memory than an sm90 block may have");
    return kBytes;
  }
};

}  // namespace sm90

template <class Bias, DType kDType, int kHeadDim>
Status FwdSm90<Bias, kDType, kHeadDim>::can_implement(const AttentionProblem& problem, const BiasDesc&) {
  if (problem.dtype != kDType || problem.head_dim != kHeadDim) {
    return Status::error(StatusCode::kUnsupported, "fwd_sm90: the problem's dtype or head dim is not the kernel's");
  }
  if (Status s = check_rows_16b_aligned(problem); !s.ok()) return s;
  return sm90::check_tma_layout(problem);
}

template <class Bias, DType kDType, int kHeadDim>
std::size_t FwdSm90<Bias, kDType, kHeadDim>::workspace_size(const AttentionProblem&, const BiasDesc&) {
  return 0;
}

template <class Bias, DType kDType, int kHeadDim>
Status FwdSm90<Bias, kDType, kHeadDim>::run(const AttentionProblem& problem, const BiasDesc& bias, void*,
                                            std::size_t) {
  return run_forward<sm90::FwdKernels, KernelTraitsSm90For<typename CuteElement<kDType>::type, kHeadDim, Bias>, Bias>(
      problem, bias);
}

}  // namespace sdpa
