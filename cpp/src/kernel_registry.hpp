// The table of compiled kernels and how one is chosen. The table's contents are generated
// (cmake/kernels.cmake); the choice is made here, in plain C++, so a host-only test can drive it with a
// fake table.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "sdpa/bias.hpp"
#include "sdpa/problem.hpp"
#include "sdpa/status.hpp"

namespace sdpa {

enum class Direction : int { kForward = 0 };

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

// Options a kernel family compiles in, as bits (none exist yet; split-KV, PackGQA and paged KV will).
enum KernelVariant : unsigned { kVariantNone = 0 };

// What identifies one compiled kernel. The name a person sees is derived from it (kernel_name).
struct KernelKey {
  Direction direction = Direction::kForward;
  int arch = 80;  // the sm_XX the kernel is written for; it runs on that compute capability and newer
  BiasId bias = BiasId::kNoBias;
  DType dtype = DType::kBFloat16;
  int head_dim = 0;
  unsigned variant = kVariantNone;
};

// A kernel family's host lifecycle (see sm80/fwd_sm80.hpp): can_implement, workspace_size, run.
using CanImplementFn = Status (*)(const AttentionProblem&, const BiasDesc&);
using WorkspaceSizeFn = std::size_t (*)(const AttentionProblem&, const BiasDesc&);
using RunFn = Status (*)(const AttentionProblem&, const BiasDesc&, void* workspace, std::size_t workspace_bytes);

struct KernelEntry {
  KernelKey key;
  const char* family;  // "fwd_sm80"
  CanImplementFn can_implement;
  WorkspaceSizeFn workspace_size;
  RunFn run;
};

const std::vector<KernelEntry>& kernel_registry();

// e.g. "fwd_sm80<AlibiCausalUpperLeft, bfloat16, hd128>"
std::string kernel_name(const KernelEntry& kernel);

struct Selection {
  Status status;
  const KernelEntry* kernel = nullptr;
  std::vector<std::string> refusals;  // one per entry that matched the key but was refused, in order
};

// Picks the kernel for `key` (whose arch is ignored) from `registry`: tries the archs the registry holds
// for that key newest first, refusing an arch newer than `capability` and any entry whose can_implement()
// refuses the problem, and records a reason for each refusal. kNotCompiled when no arch has the key;
// kUnsupported, with every reason, when each one that has it was refused.
Selection select_kernel(const std::vector<KernelEntry>& registry, const KernelKey& key, int capability,
                        const AttentionProblem& problem, const BiasDesc& bias);

}  // namespace sdpa
