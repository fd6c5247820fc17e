// The sm90 (Hopper, wgmma) forward kernel family as the host sees it, declared free of CUDA and CuTe for the
// generated registry; defined in sm90/launch_fwd_sm90.cuh and compiled for sm_90a only (SDPA_BUILD_SM90).
#pragma once

#include <cstddef>
#include <string>

#include "sdpa/bias.hpp"
#include "sdpa/problem.hpp"
#include "sdpa/status.hpp"

namespace sdpa {

template <class Bias, DType kDType, int kHeadDim>
struct FwdSm90 {
  // The sm80 family's preconditions (16-byte aligned rows); the registry's arch (90) keeps it off older GPUs.
  static Status can_implement(const AttentionProblem& problem, const BiasDesc& bias);
  // Optional (KernelEntry::workspace_optional): the tile counter of a persistent launch, which has one block
  // per SM instead of one per tile when it gets one.
  static constexpr std::size_t kWorkspaceBytes = 16;
  static std::size_t workspace_size(const AttentionProblem& problem, const BiasDesc& bias);
  static Status run(const AttentionProblem& problem, const BiasDesc& bias, void* workspace,
                    std::size_t workspace_bytes);
  // The tile, and how blocks take tiles: persistent (with a workspace) or one block per tile.
  static std::string describe(const AttentionProblem& problem, const BiasDesc& bias);
};

}  // namespace sdpa
