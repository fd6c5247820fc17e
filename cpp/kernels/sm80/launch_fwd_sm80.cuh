// Host side of the sm80 forward kernel family: AttentionProblem + BiasDesc -> FwdParams -> launch.
//
// Included only by the generated explicit-instantiation translation units, one per (bias, dtype, head dim).
#pragma once

#include <cstddef>
#include <string>

#include <cuda_runtime.h>

#include "bias/bias_trait.cuh"
#include "common/launch_checks.hpp"
#include "common/launch_forms.hpp"
#include "common/params.hpp"
#include "common/problem_checks.hpp"
#include "common/score_mod.cuh"
#include "common/tile_scheduler.hpp"
#include "sm80/cute_element.hpp"
#include "sm80/flash_fwd_kernel_sm80.cuh"
#include "sm80/fwd_sm80.hpp"
#include "sm80/kernel_traits_sm80.cuh"
#include "sm80/tile_size_sm80.hpp"

namespace sdpa {

namespace sm80 {

// Launches one instantiation of the kernel (launch_in_form() picks which).
template <class Traits, class Bias>
struct FwdLauncher {
  const AttentionProblem& problem;
  const FwdParams<typename Bias::Params>& params;

  template <BiasForm kForm, bool kVarlen>
  Status launch() const {
    auto kernel = flash_fwd_kernel_sm80<Traits, Bias, kForm, kVarlen>;
    constexpr int kSmem = Traits::kSmemBytes +
        ScoreMod<Bias, kForm>::template smem_bytes<typename Traits::Element, Traits::kBlockM, Traits::kBlockN>();
    if (Status s = allow_smem(kernel, kSmem, "launch_fwd_sm80"); !s.ok()) return s;
    // A variable-length batch sizes the grid from its longest sequence (seqlen_q) and one z per sequence.
    const auto g = SingleTileSchedulerFwd::grid(problem.seqlen_q, Traits::kBlockM, problem.heads_q, problem.batch);
    kernel<<<dim3(g.x, g.y, g.z), Traits::kNThreads, kSmem, static_cast<cudaStream_t>(problem.stream)>>>(params);
    return launch_status("launch_fwd_sm80", "kernel");
  }
};

}  // namespace sm80

template <class Bias, DType kDType, int kHeadDim>
Status FwdSm80<Bias, kDType, kHeadDim>::can_implement(const AttentionProblem& problem, const BiasDesc&) {
  if (problem.dtype != kDType || problem.head_dim != kHeadDim) {
    return Status::error(StatusCode::kUnsupported, "fwd_sm80: the problem's dtype or head dim is not the kernel's");
  }
  return check_rows_16b_aligned(problem);
}

template <class Bias, DType kDType, int kHeadDim>
std::size_t FwdSm80<Bias, kDType, kHeadDim>::workspace_size(const AttentionProblem&, const BiasDesc&) {
  return 0;
}

template <class Bias, DType kDType, int kHeadDim>
Status FwdSm80<Bias, kDType, kHeadDim>::run(const AttentionProblem& problem, const BiasDesc& bias, void*,
                                            std::size_t) {
  using Traits = KernelTraitsSm80<typename CuteElement<kDType>::type, kHeadDim, TileConfigSm80For<kHeadDim, Bias>>;
  const typename Bias::Params bias_params = Bias::make_params(bias);
  const BiasForm form = select_bias_form<Bias>(problem, bias_params);
  const auto params = make_fwd_params<Bias>(problem, bias_params, form);
  return launch_in_form<Bias>(problem, form, sm80::FwdLauncher<Traits, Bias>{problem, params});
}

}  // namespace sdpa
