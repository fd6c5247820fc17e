// Host side of the sm80 forward kernel family: AttentionProblem + BiasDesc -> FwdParams -> launch.
//
// Included only by the generated explicit-instantiation translation units, one per (bias, dtype, head dim).
#pragma once

#include <cstddef>
#include <string>

#include "bias/bias_trait.cuh"
#include "common/flash_fwd_kernel.cuh"
#include "common/launch_fwd.cuh"
#include "common/problem_checks.hpp"
#include "sm80/cute_element.hpp"
#include "sm80/epilogue_fwd_sm80.cuh"
#include "sm80/fwd_sm80.hpp"
#include "sm80/kernel_traits_sm80.cuh"
#include "sm80/mainloop_fwd_sm80.cuh"
#include "sm80/tile_size_sm80.hpp"

namespace sdpa {

namespace sm80 {

// The arch's pieces of the generic forward kernel (common/flash_fwd_kernel.cuh).
struct FwdArch {
  template <class Traits, bool kVarlen>
  using Mainloop = MainloopFwdSm80<Traits, kVarlen>;
  template <class Traits>
  using Epilogue = EpilogueFwdSm80<Traits>;
};

// The kernel this family launches (common/launch_fwd.cuh).
struct FwdKernels {
  static constexpr const char* kName = "launch_fwd_sm80";
  static constexpr bool kStagedInAccumulator = false;  // ScoreMod::apply adds the staged values after Q K^T
  template <class Traits, class Bias, BiasForm kForm, bool kVarlen>
  static auto kernel() {
    return flash_fwd_kernel<FwdArch, Traits, Bias, kForm, kVarlen>;
  }
  template <class Traits, class Bias, BiasForm kForm, bool kVarlen, class P>
  static const P& kernel_params(const AttentionProblem&, const P& params, void*, Status&) {
    return params;
  }
  template <class Traits, class Bias, bool kVarlen, class P>
  static dim3 grid(const AttentionProblem& problem, const P&) {
    return single_tile_grid<Traits, Bias, kVarlen>(problem);
  }
  template <class Traits, class Bias, BiasForm kForm>
  static constexpr int smem_bytes() {  // the tiles, and the staged form's bias tile
    return Traits::kSmemBytes +
        ScoreMod<Bias, kForm>::template smem_bytes<typename Traits::Element, Traits::kBlockM, Traits::kBlockN>();
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
  return run_forward<sm80::FwdKernels, OneTraits<Traits>, Bias>(problem, bias);
}

}  // namespace sdpa
