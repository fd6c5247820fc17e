// Host side of the sm90 forward family: AttentionProblem + BiasDesc -> FwdParams -> launch. Included only by
// the generated translation units (compiled for sm_90a).
#pragma once

#include <cstddef>

#include "bias/bias_trait.cuh"
#include "common/flash_fwd_kernel.cuh"
#include "common/launch_fwd.cuh"
#include "common/problem_checks.hpp"
#include "sm80/cute_element.hpp"
#include "sm90/epilogue_fwd_sm90.cuh"
#include "sm90/fwd_sm90.hpp"
#include "sm90/kernel_traits_sm90.cuh"
#include "sm90/mainloop_fwd_sm90.cuh"

namespace sdpa {

namespace sm90 {

// The arch's pieces of the generic forward kernel (common/flash_fwd_kernel.cuh).
struct FwdArch {
  template <class Traits, bool kVarlen>
  using Mainloop = MainloopFwdSm90<Traits, kVarlen>;
  template <class Traits>
  using Epilogue = EpilogueFwdSm90<Traits>;
};

// The kernel this family launches (common/launch_fwd.cuh).
struct FwdKernels {
  static constexpr const char* kName = "launch_fwd_sm90";
  template <class Traits, class Bias, BiasForm kForm, bool kVarlen>
  static auto kernel() {
    return flash_fwd_kernel<FwdArch, Traits, Bias, kForm, kVarlen>;
  }
};

}  // namespace sm90

template <class Bias, DType kDType, int kHeadDim>
Status FwdSm90<Bias, kDType, kHeadDim>::can_implement(const AttentionProblem& problem, const BiasDesc&) {
  if (problem.dtype != kDType || problem.head_dim != kHeadDim) {
    return Status::error(StatusCode::kUnsupported, "fwd_sm90: the problem's dtype or head dim is not the kernel's");
  }
  return check_rows_16b_aligned(problem);
}

template <class Bias, DType kDType, int kHeadDim>
std::size_t FwdSm90<Bias, kDType, kHeadDim>::workspace_size(const AttentionProblem&, const BiasDesc&) {
  return 0;
}

template <class Bias, DType kDType, int kHeadDim>
Status FwdSm90<Bias, kDType, kHeadDim>::run(const AttentionProblem& problem, const BiasDesc& bias, void*,
                                            std::size_t) {
  using Traits = KernelTraitsSm90<typename CuteElement<kDType>::type, kHeadDim>;
  return run_forward<sm90::FwdKernels, Traits, Bias>(problem, bias);
}

}  // namespace sdpa
