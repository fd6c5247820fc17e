// Host side of the sm90 backward family: BackwardProblem + BiasDesc -> BwdParams -> the atomic-dQ launches
// (common/launch_bwd.cuh) with the wgmma mainloop. Included only by the generated translation units
// (compiled for sm_90a).
#pragma once

#include <cstddef>

#include "bias/bias_trait.cuh"
#include "common/launch_bwd.cuh"
#include "common/params_bwd.hpp"
#include "sm80/cute_element.hpp"
#include "sm90/bwd_sm90.hpp"
#include "sm90/kernel_traits_bwd_sm90.cuh"
#include "sm90/mainloop_bwd_sm90.cuh"

namespace sdpa {
namespace sm90 {

constexpr const char* kBwdFamily = "launch_bwd_sm90";

template <DType kDType, int kHeadDim>
using BwdTraits = KernelTraitsBwdSm90<typename CuteElement<kDType>::type, kHeadDim>;

}  // namespace sm90

template <class Bias, DType kDType, int kHeadDim>
Status BwdSm90<Bias, kDType, kHeadDim>::can_implement(const BackwardProblem& problem, const BiasDesc&) {
  if (problem.deterministic) {
    return Status::error(StatusCode::kUnsupported, "bwd_sm90: deterministic mode needs dQ without atomics");
  }
  return check_backward_problem(problem, kDType, kHeadDim, "bwd_sm90");
}

template <class Bias, DType kDType, int kHeadDim>
std::size_t BwdSm90<Bias, kDType, kHeadDim>::workspace_size(const BackwardProblem& problem, const BiasDesc&) {
  return BwdWorkspaceLayout::of(problem.forward, sm90::BwdTraits<kDType, kHeadDim>::kBlockM).total_bytes();
}

template <class Bias, DType kDType, int kHeadDim>
Status BwdSm90<Bias, kDType, kHeadDim>::run(const BackwardProblem& problem, const BiasDesc& bias, void* workspace,
                                            std::size_t) {
  using Traits = sm90::BwdTraits<kDType, kHeadDim>;
  return run_backward<Traits, Bias>(problem, bias, workspace, [&](auto kForm, auto const& params) {
    return launch_bwd_atomic_dq<Traits, sm90::MainloopBwdSm90<Traits>, Bias, decltype(kForm)::value>(
        problem.forward, params, sm90::kBwdFamily);
  });
}

}  // namespace sdpa
