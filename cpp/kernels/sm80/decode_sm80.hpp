// The sm80 split-KV decode family as the host sees it (see fwd_sm80.hpp for the pattern): a forward for
// few query rows against many keys. Chosen over FwdSm80 for seqlen_q <= kSplitKvMaxSeqlenQ when the caller
// passes a workspace; instantiated per (bias trait, dtype, head dim) in generated translation units,
// defined in sm80/launch_decode_sm80.cuh.
#pragma once

#include <cstddef>
#include <string>

#include "sdpa/bias.hpp"
#include "sdpa/problem.hpp"
#include "sdpa/status.hpp"

namespace sdpa {

template <class Bias, DType kDType, int kHeadDim>
struct DecodeSm80 {
  // Beyond the key: seqlen_q <= kSplitKvMaxSeqlenQ and 16-byte aligned rows. Assumes validate() passed.
  static Status can_implement(const AttentionProblem& problem, const BiasDesc& bias);
  // The partial results of every split (SplitKvLayout::bytes()); depends on the current device's SM count.
  static std::size_t workspace_size(const AttentionProblem& problem, const BiasDesc& bias);
  // Two launches on problem.stream (the split kernel, then the combine); no allocation, no synchronization.
  static Status run(const AttentionProblem& problem, const BiasDesc& bias, void* workspace,
                    std::size_t workspace_bytes);
  // For explain(): the packing, the split count and why, the key layout, the workspace.
  static std::string describe(const AttentionProblem& problem, const BiasDesc& bias);
};

}  // namespace sdpa
