// The sm90 (Hopper, wgmma) backward kernel family as the host sees it, declared free of CUDA and CuTe for the
// generated registry; defined in sm90/launch_bwd_sm90.cuh and compiled for sm_90a only (SDPA_BUILD_SM90).
#pragma once

#include <cstddef>

#include "sdpa/bias.hpp"
#include "sdpa/problem.hpp"
#include "sdpa/status.hpp"

namespace sdpa {

// The sm80 backward's structure with its five products on wgmma (sm90/mainloop_bwd_sm90.cuh); dQ by atomics
// only, so deterministic problems go to the sm80 family, which has a dQ kernel without them.
template <class Bias, DType kDType, int kHeadDim>
struct BwdSm90 {
  // 16-byte aligned rows of every operand and gradient, and not deterministic.
  static Status can_implement(const BackwardProblem& problem, const BiasDesc& bias);
  // fp32 dQ accumulators and dot(dO, O) per query row, both padded to whole query blocks.
  static std::size_t workspace_size(const BackwardProblem& problem, const BiasDesc& bias);
  // Launches asynchronously on problem.forward.stream (no allocation, no synchronization).
  static Status run(const BackwardProblem& problem, const BiasDesc& bias, void* workspace,
                    std::size_t workspace_bytes);
};

}  // namespace sdpa
