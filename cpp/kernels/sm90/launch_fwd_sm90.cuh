// Host side of the sm90 forward family: AttentionProblem + BiasDesc -> FwdParams -> launch. Included only by
// the generated translation units (compiled for sm_90a).
#pragma once

#include <cstddef>

#include <cuda_runtime.h>

#include "bias/bias_trait.cuh"
#include "common/launch_checks.hpp"
#include "common/launch_forms.hpp"
#include "common/params.hpp"
#include "common/problem_checks.hpp"
#include "common/score_mod.cuh"
#include "common/tile_scheduler.hpp"
#include "sm80/cute_element.hpp"
#include "sm90/flash_fwd_kernel_sm90.cuh"
#include "sm90/fwd_sm90.hpp"
#include "sm90/kernel_traits_sm90.cuh"

namespace sdpa {

namespace sm90 {

template <class Traits, class Bias>
struct FwdLauncher {
  const AttentionProblem& problem;
  const FwdParams<typename Bias::Params>& params;

  template <BiasForm kForm, bool kVarlen>
  Status launch() const {
    auto kernel = flash_fwd_kernel_sm90<Traits, Bias, kForm, kVarlen>;
    constexpr int kSmem = Traits::kSmemBytes +
        ScoreMod<Bias, kForm>::template smem_bytes<typename Traits::Element, Traits::kBlockM, Traits::kBlockN>();
    if (Status s = allow_smem(kernel, kSmem, "launch_fwd_sm90"); !s.ok()) return s;
    const auto g = SingleTileSchedulerFwd::grid(problem.seqlen_q, Traits::kBlockM, problem.heads_q, problem.batch);
    kernel<<<dim3(g.x, g.y, g.z), Traits::kNThreads, kSmem, static_cast<cudaStream_t>(problem.stream)>>>(params);
    return launch_status("launch_fwd_sm90", "kernel");
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
  const typename Bias::Params bias_params = Bias::make_params(bias);
  const BiasForm form = select_bias_form<Bias>(problem, bias_params);
  const auto params = make_fwd_params<Bias>(problem, bias_params, form);
  return launch_in_form<Bias>(problem, form, sm90::FwdLauncher<Traits, Bias>{problem, params});
}

}  // namespace sdpa
