// Host side of the sm80 backward family: BackwardProblem + BiasDesc -> BwdParams -> three launches.
//
// Included only by the generated explicit-instantiation translation units, one per (bias, dtype, head dim).
#pragma once

#include <cstddef>

#include <cuda_runtime.h>

#include "bias/bias_trait.cuh"
#include "common/launch_bwd.cuh"
#include "common/params_bwd.hpp"
#include "sm80/bwd_sm80.hpp"
#include "sm80/cute_element.hpp"
#include "sm80/flash_bwd_dq_kernel_sm80.cuh"
#include "sm80/kernel_traits_bwd_sm80.cuh"
#include "sm80/mainloop_bwd_sm80.cuh"

namespace sdpa {
namespace sm80 {

constexpr const char* kBwdFamily = "launch_bwd_sm80";

template <class Traits, class Bias, BiasForm kForm>
Status launch_bwd_kernels(const BackwardProblem& problem, const BwdParams<typename Bias::Params>& params) {
  using Mainloop = MainloopBwdSm80<Traits>;
  const AttentionProblem& fwd = problem.forward;
  if (!problem.deterministic) return launch_bwd_atomic_dq<Traits, Mainloop, Bias, kForm>(fwd, params, kBwdFamily);
  // Deterministic: no atomics anywhere; dQ is summed over key tiles in order by its own kernel.
  if (Status s = launch_bwd_preprocess<Traits>(fwd, params, kBwdFamily); !s.ok()) return s;
  if (Status s = launch_bwd_dkdv<Traits, Mainloop, Bias, kForm, false>(fwd, params, kBwdFamily); !s.ok()) return s;
  auto dq = flash_bwd_dq_kernel_sm80<Traits, Bias, kForm>;
  constexpr int kDqSmem = bwd_dq_smem_bytes<Traits>();
  if (Status s = allow_smem(dq, kDqSmem, kBwdFamily); !s.ok()) return s;
  dq<<<dim3(params.seqlen_q_padded / Traits::kBlockM, fwd.heads_q, fwd.batch), Traits::kNThreads, kDqSmem,
       static_cast<cudaStream_t>(fwd.stream)>>>(params);
  return launch_status(kBwdFamily, "dq");
}

template <DType kDType, int kHeadDim>
using BwdTraits = KernelTraitsBwdSm80<typename CuteElement<kDType>::type, kHeadDim>;

}  // namespace sm80

template <class Bias, DType kDType, int kHeadDim>
Status BwdSm80<Bias, kDType, kHeadDim>::can_implement(const BackwardProblem& problem, const BiasDesc&) {
  return check_backward_problem(problem, kDType, kHeadDim, "bwd_sm80");
}

template <class Bias, DType kDType, int kHeadDim>
std::size_t BwdSm80<Bias, kDType, kHeadDim>::workspace_size(const BackwardProblem& problem, const BiasDesc&) {
  return BwdWorkspaceLayout::of(problem.forward, sm80::BwdTraits<kDType, kHeadDim>::kBlockM).total_bytes();
}

template <class Bias, DType kDType, int kHeadDim>
Status BwdSm80<Bias, kDType, kHeadDim>::run(const BackwardProblem& problem, const BiasDesc& bias, void* workspace,
                                            std::size_t) {
  using Traits = sm80::BwdTraits<kDType, kHeadDim>;
  return run_backward<Traits, Bias>(problem, bias, workspace, [&](auto kForm, auto const& params) {
    return sm80::launch_bwd_kernels<Traits, Bias, decltype(kForm)::value>(problem, params);
  });
}

}  // namespace sdpa
