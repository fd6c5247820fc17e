// The sm80 forward kernel family as the host sees it: its lifecycle, declared free of CUDA and CuTe so
// the generated registry (plain C++) can take the members' addresses. Each (bias trait, dtype, head dim)
// is explicitly instantiated in its own generated translation unit (cmake/kernels.cmake); the members are
// defined in sm80/launch_fwd_sm80.cuh.
#pragma once

#include <cstddef>

#include "sdpa/bias.hpp"
#include "sdpa/problem.hpp"
#include "sdpa/status.hpp"

namespace sdpa {

// FlashAttention-2-class forward: mma.sync tensor cores, ldmatrix, cp.async pipelining (sm80 and newer).
template <class Bias, DType kDType, int kHeadDim>
struct FwdSm80 {
  // What this family needs beyond the registry key (dtype, head dim, bias trait, compute capability):
  // 16-byte aligned rows. Assumes validate() passed.
  static Status can_implement(const AttentionProblem& problem, const BiasDesc& bias);
  // Bytes of caller-owned device memory run() needs: none.
  static std::size_t workspace_size(const AttentionProblem& problem, const BiasDesc& bias);
  // Launches asynchronously on problem.stream; assumes can_implement() passed and the workspace holds
  // workspace_size() bytes. No allocation and no synchronization, so it can be captured in a CUDA graph.
  static Status run(const AttentionProblem& problem, const BiasDesc& bias, void* workspace,
                    std::size_t workspace_bytes);
};

}  // namespace sdpa
