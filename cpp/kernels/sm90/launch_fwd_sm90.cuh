// Host side of the sm90 forward family: AttentionProblem + BiasDesc -> FwdParams -> launch. Included only by
// the generated translation units (compiled for sm_90a).
#pragma once

#include <cstddef>
#include <string>

#include "bias/bias_trait.cuh"
#include "common/launch_fwd.cuh"
#include "common/problem_checks.hpp"
#include "sm80/cute_element.hpp"
#include "sm90/flash_fwd_kernel_sm90.cuh"
#include "sm90/fwd_sm90.hpp"
#include "sm90/kernel_traits_sm90.cuh"
#include "sm90/tma_fwd_sm90.cuh"
#include "device_info.hpp"

namespace sdpa {

namespace sm90 {

// The kernel this family launches (common/launch_fwd.cuh): warp-specialized, its own shared-memory plan.
struct FwdKernels {
  static constexpr const char* kName = "launch_fwd_sm90";
  static constexpr bool kStagedInAccumulator = true;  // ScoreMod::init_from_tile
  template <class Traits, class Bias, BiasForm kForm, bool kVarlen>
  static auto kernel() {
    return flash_fwd_kernel_sm90<Traits, Bias, kForm, kVarlen>;
  }
  // A dense problem's Q/K/V come by TMA (descriptors built here, on the host), and so does the bias tile of the
  // staged form; a variable-length batch keeps cp.async. A persistent launch with more tiles than SMs takes its tile
  // counter from the workspace and zeroes it on the problem's stream; without a workspace it has one block per
  // tile (and no counter).
  template <class Traits, class Bias, BiasForm kForm, bool kVarlen, class P>
  static auto kernel_params(const AttentionProblem& problem, const P& params, void* workspace, Status& status) {
    using KP = FwdParamsSm90<P, TmaFor<Traits, kVarlen>, BiasTmaFor<Traits, kForm>>;
    if constexpr (kVarlen) {
      return KP{params, {}, {}, {}};
    } else {
      KP kp{params, TmaFwd<Traits>::make(problem), {}, persistent_schedule<Traits, Bias, kVarlen>(problem, workspace)};
      if constexpr (kForm == BiasForm::kStaged) {
        const auto source = Bias::tile_source(params.bias, int(sizeof(typename Traits::Element)), problem.seqlen_q,
                                              problem.seqlen_kv, problem.heads_q, problem.batch);
        status = BiasTileSm90<Traits::kBlockM, Traits::kBlockN>::make(source, kp.bias_tile);
      }
      return kp;
    }
  }
  // A persistent launch has one block per SM when it has a tile counter, else one per tile.
  template <class Traits, class Bias, bool kVarlen, class KP>
  static dim3 grid(const AttentionProblem& problem, const KP& kernel_params) {
    if constexpr (!kPersistentFwdSm90<Bias, kVarlen>) {
      return single_tile_grid<Traits, Bias, kVarlen>(problem);
    } else {
      const auto& s = kernel_params.sched;
      return dim3(s.counter != nullptr ? current_sm_count() : s.num_tiles);
    }
  }
  // Sections of (head, batch) pairs: two for a causal mask, one without (measured on the H100 at S = 8k: two
  // gained 1.5-4.8% over one tile per block on causal shapes, and lost 3% without a mask, where one pair
  // gained; larger sections lost on both), fewer where two pairs' keys and values would fill half the L2.
  template <class Traits, class Bias, bool kVarlen>
  static PersistentTileSchedulerFwd::Params persistent_schedule(const AttentionProblem& problem, void* workspace) {
    if constexpr (!kPersistentFwdSm90<Bias, kVarlen>) {
      return {};
    } else {
      const double kv_bytes_per_head_q =
          2.0 * problem.seqlen_kv * problem.head_dim * sizeof(typename Traits::Element) / problem.group_size();
      // A dense bias: sections of one head's batch elements, batch fastest, so that they share each bias tile
      // through L2 as the one-tile grid's batch-fastest order does.
      constexpr bool kDense = Bias::kKind == BiasKind::kDense;
      auto s = PersistentTileSchedulerFwd::make(problem.seqlen_q, Traits::kBlockM, problem.heads_q, problem.batch,
                                                kv_bytes_per_head_q, current_l2_bytes(),
                                                kDense ? problem.batch : Bias::kIsCausal ? 2 : 1, kDense);
      if (workspace != nullptr && s.num_tiles > current_sm_count()) {
        s.counter = static_cast<int*>(workspace);
        cudaMemsetAsync(s.counter, 0, sizeof(int), static_cast<cudaStream_t>(problem.stream));  // launch_status checks
      }
      return s;
    }
  }
  template <class Traits, class Bias, BiasForm kForm>
  static constexpr int smem_bytes() {
    constexpr int kBytes = MainloopFwdSm90<Traits, false>::template smem_bytes<kForm>();
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

// The persistent launches' tile counter (optional: the registry runs the kernel without it when the caller
// passes no workspace).
template <class Bias, DType kDType, int kHeadDim>
std::size_t FwdSm90<Bias, kDType, kHeadDim>::workspace_size(const AttentionProblem& problem, const BiasDesc&) {
  return sm90::kPersistentFwdSm90<Bias, false> && !problem.is_varlen() ? kWorkspaceBytes : 0;
}

namespace sm90 {

// describe()'s account of the launch run() makes, in the form it picks (launch_in_form calls launch()).
template <class TraitsFor, class Bias>
struct FwdDescriber {
  const AttentionProblem& problem;
  std::string& text;
  template <BiasForm kForm, bool kVarlen>
  Status launch() const {
    using Traits = typename TraitsFor::template type<kForm, kVarlen>;
    text = "tiles of " + std::to_string(Traits::kBlockM) + " query rows x " + std::to_string(Traits::kBlockN) +
           " keys on " + std::to_string(Traits::kNWarpgroups) + " consumer warpgroups; ";
    if constexpr (!kPersistentFwdSm90<Bias, kVarlen>) {
      text += "one block per tile";
    } else {
      const auto s = FwdKernels::persistent_schedule<Traits, Bias, kVarlen>(problem, nullptr);
      text += std::to_string(s.num_tiles) + " tiles; given a workspace and more tiles than the " +
              std::to_string(current_sm_count()) +
              " SMs, persistent (one block per SM takes tiles from a counter, longest first, in sections of " +
              std::to_string(s.pairs_per_section) + " (query head, batch) pairs" +
              (s.batch_fastest ? ", batch fastest" : "") + "), otherwise one block per tile";
    }
    if constexpr (kForm == BiasForm::kStaged) {
      text += "; the bias comes by TMA in tiles of " + std::to_string(Traits::kBlockM) + " rows, " +
              std::to_string(BiasTileSm90<Traits::kBlockM, Traits::kBlockN>::kStages) + " stages deep";
    }
    return Status::success();
  }
};

}  // namespace sm90

template <class Bias, DType kDType, int kHeadDim>
std::string FwdSm90<Bias, kDType, kHeadDim>::describe(const AttentionProblem& problem, const BiasDesc& bias) {
  using TraitsFor = KernelTraitsSm90For<typename CuteElement<kDType>::type, kHeadDim, Bias>;
  const BiasForm form = select_bias_form<Bias>(problem, Bias::make_params(bias));
  std::string text;
  launch_in_form<Bias>(problem, form, sm90::FwdDescriber<TraitsFor, Bias>{problem, text});
  return text;
}

template <class Bias, DType kDType, int kHeadDim>
Status FwdSm90<Bias, kDType, kHeadDim>::run(const AttentionProblem& problem, const BiasDesc& bias, void* workspace,
                                            std::size_t /*workspace_bytes: run_kernel checked it*/) {
  return run_forward<sm90::FwdKernels, KernelTraitsSm90For<typename CuteElement<kDType>::type, kHeadDim, Bias>, Bias>(
      problem, bias, workspace);
}

}  // namespace sdpa
