// Launching a forward kernel family (sm80, sm90): bias params -> BiasForm -> FwdParams -> the instantiation
// launch_in_form() picks, on a grid from FwdSchedulerFor (tile_scheduler.hpp). A family says which kernel
// template it launches and under what name it reports errors:
//   struct Family {
//     static constexpr const char* kName = "launch_fwd_sm80";
//     static constexpr bool kStagedInAccumulator = false;  // a staged bias tile goes into the accumulator
//                                                          // before Q K^T (make_fwd_params then folds the scale)
//     template <class Traits, class Bias, BiasForm kForm, bool kVarlen> static auto kernel();
//     template <class Traits, class Bias, BiasForm kForm> static constexpr int smem_bytes();  // dynamic
//     // What the kernel takes: the params, or more (sm90: TMA descriptors, the staged form's bias tile's too, a
//     // schedule whose tile counter is the workspace, if any); status: not ok if they cannot be built.
//     template <class Traits, class Bias, BiasForm kForm, bool kVarlen, class P>
//     static auto kernel_params(const AttentionProblem&, const P&, void* workspace, Status& status);
//     template <class Traits, class Bias, bool kVarlen, class KP>     // its grid (single_tile_grid, or
//     static dim3 grid(const AttentionProblem&, const KP&);          // persistent)
//   };
#pragma once

#include <type_traits>

#include <cuda_runtime.h>

#include "common/launch_checks.hpp"
#include "common/launch_forms.hpp"
#include "common/params.hpp"
#include "common/score_mod.cuh"
#include "common/tile_scheduler.hpp"

namespace sdpa {

// TraitsFor::type<kForm, kVarlen>: the kernel traits of each launch form (a family may size its tiles per
// form; OneTraits gives every form the same).
template <class Family, class TraitsFor, class Bias>
struct FwdLauncher {
  const AttentionProblem& problem;
  const FwdParams<typename Bias::Params>& params;
  void* workspace;  // the family's workspace_size() bytes, or null (families that need none ignore it)

  template <BiasForm kForm, bool kVarlen>
  Status launch() const {
    using Traits = typename TraitsFor::template type<kForm, kVarlen>;
    auto kernel = Family::template kernel<Traits, Bias, kForm, kVarlen>();
    constexpr int kSmem = Family::template smem_bytes<Traits, Bias, kForm>();
    if (Status s = allow_smem(kernel, kSmem, Family::kName); !s.ok()) return s;
    Status status = Status::success();
    const auto kernel_params =
        Family::template kernel_params<Traits, Bias, kForm, kVarlen>(problem, params, workspace, status);
    if (!status.ok()) return status;
    const dim3 grid = Family::template grid<Traits, Bias, kVarlen>(problem, kernel_params);
    kernel<<<grid, Traits::kNThreads, kSmem, static_cast<cudaStream_t>(problem.stream)>>>(kernel_params);
    return launch_status(Family::kName, "kernel");
  }
};

// One block per tile (FwdSchedulerFor): a variable-length batch sizes the grid from its longest sequence
// (seqlen_q) and one z per sequence.
template <class Traits, class Bias, bool kVarlen>
dim3 single_tile_grid(const AttentionProblem& problem) {
  const auto g = FwdSchedulerFor<Bias, kVarlen>::grid(problem.seqlen_q, Traits::kBlockM, problem.heads_q,
                                                      problem.batch);
  return dim3(g.x, g.y, g.z);
}

template <class Traits>
struct OneTraits {
  template <BiasForm, bool>
  using type = Traits;
};

// The whole run(): assumes the family's can_implement() passed. TraitsFor as in FwdLauncher.
template <class Family, class TraitsFor, class Bias>
Status run_forward(const AttentionProblem& problem, const BiasDesc& bias, void* workspace = nullptr) {
  const typename Bias::Params bias_params = Bias::make_params(bias);
  const BiasForm form = select_bias_form<Bias>(problem, bias_params);
  const auto params = make_fwd_params<Bias>(problem, bias_params, form, Family::kStagedInAccumulator);
  return launch_in_form<Bias>(problem, form, FwdLauncher<Family, TraitsFor, Bias>{problem, params, workspace});
}

}  // namespace sdpa
