// The sm80 backward kernel family as the host sees it, declared free of CUDA and CuTe like FwdSm80
// (sm80/fwd_sm80.hpp). Each (bias trait, dtype, head dim) is explicitly instantiated in its own generated
// translation unit; the members are defined in sm80/launch_bwd_sm80.cuh.
#pragma once

#include <cstddef>

#include "sdpa/bias.hpp"
#include "sdpa/problem.hpp"
#include "sdpa/status.hpp"

namespace sdpa {

// FlashAttention-2-class backward: one thread block per key block of one kv head walks the query blocks
// its bias lets it see (q_tiles) for every query head of the group, keeping dK and dV on chip; dQ goes to
// fp32 accumulators in the workspace (atomics, or a second pass in deterministic mode).
template <class Bias, DType kDType, int kHeadDim>
struct BwdSm80 {
  // 16-byte aligned rows of every operand and gradient. Assumes validate_backward() passed.
  static Status can_implement(const BackwardProblem& problem, const BiasDesc& bias);
  // fp32 dQ accumulators and dot(dO, O) per query row, both padded to whole query blocks.
  static std::size_t workspace_size(const BackwardProblem& problem, const BiasDesc& bias);
  // Launches asynchronously on problem.forward.stream (no allocation, no synchronization).
  static Status run(const BackwardProblem& problem, const BiasDesc& bias, void* workspace,
                    std::size_t workspace_bytes);
};

}  // namespace sdpa
