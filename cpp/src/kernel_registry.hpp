// The tables of compiled kernels and how one is chosen. The tables' contents are generated
// (cmake/kernels.cmake); the choice is made here, in plain C++, so a host-only test can drive it with a
// fake table. Forward and backward kernels solve different problem types (AttentionProblem,
// BackwardProblem), so an entry is a template over its problem type and each direction has its own table;
// the selection algorithm is one template shared by both (kernel_registry.cpp instantiates it for each).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "sdpa/bias.hpp"
#include "sdpa/problem.hpp"
#include "sdpa/status.hpp"

namespace sdpa {

enum class Direction : int { kForward = 0, kBackward = 1 };

// One enumerator per entry of sdpa/bias_traits.def: BiasId::kNoBias, ..., BiasId::kDenseBiasCausalLowerRight.
enum class BiasId : int {
#define SDPA_BIAS_TRAIT(Name, Kind, Causal) k##Name,
#include "sdpa/bias_traits.def"
#undef SDPA_BIAS_TRAIT
};

inline BiasId bias_id(const BiasDesc& bias) {
#define SDPA_BIAS_TRAIT(Name, Kind, Causal) \
  if (bias.kind == BiasKind::Kind && bias.causal == CausalVariant::Causal) return BiasId::k##Name;
#include "sdpa/bias_traits.def"
#undef SDPA_BIAS_TRAIT
  return BiasId::kNoBias;  // unreachable after validate()
}

inline const char* bias_id_name(BiasId id) {
  switch (id) {
#define SDPA_BIAS_TRAIT(Name, Kind, Causal) \
  case BiasId::k##Name: return #Name;
#include "sdpa/bias_traits.def"
#undef SDPA_BIAS_TRAIT
  }
  return "Unknown";
}

// Options a kernel family compiles in, as bits. kVariantSplitKv: the split-KV decode family (packed GQA
// rows, key range split across blocks, a combine), which needs a workspace.
enum KernelVariant : unsigned { kVariantNone = 0, kVariantSplitKv = 1 };

// What identifies one compiled kernel. The name a person sees is derived from it (kernel_name).
struct KernelKey {
  Direction direction = Direction::kForward;
  int arch = 80;  // the sm_XX the kernel is written for; it runs on that compute capability and newer
  BiasId bias = BiasId::kNoBias;
  DType dtype = DType::kBFloat16;
  int head_dim = 0;
  unsigned variant = kVariantNone;
};

// A kernel family's host lifecycle over the problem type it solves (see sm80/fwd_sm80.hpp and
// sm80/bwd_sm80.hpp): can_implement, workspace_size, run.
template <class Problem>
using CanImplementFnFor = Status (*)(const Problem&, const BiasDesc&);
template <class Problem>
using WorkspaceSizeFnFor = std::size_t (*)(const Problem&, const BiasDesc&);
template <class Problem>
using RunFnFor = Status (*)(const Problem&, const BiasDesc&, void* workspace, std::size_t workspace_bytes);
// What the kernel will do for this problem beyond its name (split count, packing, cache layout).
template <class Problem>
using DescribeFnFor = std::string (*)(const Problem&, const BiasDesc&);

template <class Problem>
struct KernelEntryFor {
  KernelKey key;
  const char* family;  // "fwd_sm80", "decode_sm80", "bwd_sm80"
  CanImplementFnFor<Problem> can_implement;
  WorkspaceSizeFnFor<Problem> workspace_size;
  RunFnFor<Problem> run;
  DescribeFnFor<Problem> describe = nullptr;  // families with nothing to add leave it null
  // The kernel uses a workspace when the caller passes one (workspace_size() bytes) and runs without one
  // when the caller passes none at all (the Hopper forward: a tile counter for its persistent schedule).
  bool workspace_optional = false;
};

using KernelEntry = KernelEntryFor<AttentionProblem>;
using BackwardKernelEntry = KernelEntryFor<BackwardProblem>;
using CanImplementFn = CanImplementFnFor<AttentionProblem>;
using WorkspaceSizeFn = WorkspaceSizeFnFor<AttentionProblem>;
using RunFn = RunFnFor<AttentionProblem>;

// The generated tables: every key's direction is the table's.
const std::vector<KernelEntry>& kernel_registry();
const std::vector<BackwardKernelEntry>& backward_kernel_registry();

// e.g. "fwd_sm80<AlibiCausalUpperLeft, bfloat16, hd128>"
std::string kernel_name(const KernelKey& key, const char* family);
template <class Problem>
std::string kernel_name(const KernelEntryFor<Problem>& kernel) {
  return kernel_name(kernel.key, kernel.family);
}

template <class Problem>
struct SelectionFor {
  Status status;
  const KernelEntryFor<Problem>* kernel = nullptr;
  std::vector<std::string> refusals;  // one per entry that matched the key but was refused, in order
};

using Selection = SelectionFor<AttentionProblem>;
using BackwardSelection = SelectionFor<BackwardProblem>;

// select_kernel and run_kernel are defined once, in kernel_registry.cpp, for both problem types.

// Picks the kernel for `key` (whose arch is ignored) from `registry`: tries the archs the registry holds
// for that key newest first, refusing an arch newer than `capability` and any entry whose can_implement()
// refuses the problem, and records a reason for each refusal. kNotCompiled when no arch has the key;
// kUnsupported, with every reason, when each one that has it was refused.
template <class Problem>
SelectionFor<Problem> select_kernel(const std::vector<KernelEntryFor<Problem>>& registry, const KernelKey& key,
                                    int capability, const Problem& problem, const BiasDesc& bias);

// Runs a selected kernel after checking the caller's workspace against its workspace_size(): a smaller
// one (or none where bytes are needed) is kInvalidArgument naming the size query of the key's direction,
// except that a kernel whose workspace is optional runs without one when the caller passes none (null, 0
// bytes) and asks for no size. `needed`, when given, gets that size either way.
template <class Problem>
Status run_kernel(const KernelEntryFor<Problem>& kernel, const Problem& problem, const BiasDesc& bias,
                  void* workspace, std::size_t workspace_bytes, std::size_t* needed = nullptr);

}  // namespace sdpa
