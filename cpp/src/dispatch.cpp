// validate -> key -> archs in preference order, each with its can_implement -> run, for the forward and the
// backward alike: only the validation, the key's direction and the table differ. Every refusal carries a
// reason a person can act on.
#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <string>
#include <vector>

#include "device_info.hpp"
#include "kernel_registry.hpp"
#include "sdpa/sdpa.hpp"

namespace sdpa {
namespace {

Status unsupported(std::string message) { return Status::error(StatusCode::kUnsupported, std::move(message)); }

template <class Problem>
SelectionFor<Problem> refused(Status status) {
  SelectionFor<Problem> selection;
  selection.status = std::move(status);
  return selection;
}

// The head dims `registry` holds for a bias and dtype, for the "not compiled" message.
template <class Problem>
std::string compiled_head_dims(const std::vector<KernelEntryFor<Problem>>& registry, BiasId bias, DType dtype) {
  std::vector<int> dims;
  for (const KernelEntryFor<Problem>& k : registry) {
    if (k.key.bias == bias && k.key.dtype == dtype &&
        std::find(dims.begin(), dims.end(), k.key.head_dim) == dims.end()) {
      dims.push_back(k.key.head_dim);
    }
  }
  std::string text;
  for (int d : dims) text += (text.empty() ? "" : ", ") + std::to_string(d);
  return text.empty() ? "none" : text;
}

KernelKey make_key(Direction direction, const AttentionProblem& problem, const BiasDesc& bias, unsigned variant) {
  KernelKey key;
  key.variant = variant;
  key.direction = direction;
  key.bias = bias_id(bias);
  key.dtype = problem.dtype;
  key.head_dim = problem.head_dim;
  return key;
}

// The part of a problem that holds its dtype and shapes: the backward's is the forward call it undoes.
const AttentionProblem& forward_of(const AttentionProblem& problem) { return problem; }
const AttentionProblem& forward_of(const BackwardProblem& problem) { return problem.forward; }

// SDPA_MAX_ARCH from the environment, read once; 0 when unset or not a number.
int max_arch_from_environment() {
  static const int limit = [] {
    const char* value = std::getenv("SDPA_MAX_ARCH");
    return value != nullptr ? std::atoi(value) : 0;
  }();
  return limit;
}

// Everything after validation: a CUDA build, a dtype the kernels read, a visible device, then the table.
template <class Problem>
SelectionFor<Problem> select_compiled(const std::vector<KernelEntryFor<Problem>>& registry, Direction direction,
                                      const Problem& problem, const BiasDesc& bias,
                                      unsigned variant = kVariantNone) {
  const AttentionProblem& fwd = forward_of(problem);
  if (!built_with_cuda()) {
    return refused<Problem>(Status::error(StatusCode::kNotCompiled, "libsdpa was built without CUDA kernels"));
  }
  if (fwd.dtype != DType::kFloat16 && fwd.dtype != DType::kBFloat16) {
    return refused<Problem>(unsupported(std::string("fused kernels read float16 or bfloat16 inputs; got ") +
                                        dtype_name(fwd.dtype)));
  }
  int capability = current_compute_capability();
  if (capability == 0) return refused<Problem>(unsupported("no CUDA device is visible"));
  // SDPA_MAX_ARCH (e.g. 80) caps the arch of the kernels considered, as if the device were that old: to time
  // two kernel families of one build side by side, or to step around one.
  if (const int limit = max_arch_from_environment(); limit > 0 && limit < capability) capability = limit;
  const KernelKey key = make_key(direction, fwd, bias, variant);
  SelectionFor<Problem> selection = select_kernel(registry, key, capability, problem, bias);
  if (selection.status.code == StatusCode::kNotCompiled) {
    selection.status.message += " (compiled head dims: " + compiled_head_dims(registry, key.bias, key.dtype) + ")";
  }
  return selection;
}

// A few query rows go to the split-KV decode family when the caller can pass it a workspace and it covers
// the problem; everything else, and every refusal of that family, goes to the prefill family. A
// variable-length batch asked for num_splits = 1 (batch invariance) always takes the prefill family: which
// family runs it would otherwise follow its longest sequence, and a sequence's rounding with it.
Selection select_forward_kernel(const AttentionProblem& problem, const BiasDesc& bias, bool with_workspace) {
  if (Status s = validate(problem, bias); !s.ok()) return refused<AttentionProblem>(s);
  const bool batch_invariant_varlen = problem.is_varlen() && problem.num_splits == 1;
  if (with_workspace && problem.seqlen_q <= kSplitKvMaxSeqlenQ && !batch_invariant_varlen) {
    Selection split = select_compiled(kernel_registry(), Direction::kForward, problem, bias, kVariantSplitKv);
    if (split.kernel) return split;
  }
  return select_compiled(kernel_registry(), Direction::kForward, problem, bias);
}

BackwardSelection select_backward_kernel(const BackwardProblem& problem, const BiasDesc& bias) {
  if (Status s = validate_backward(problem, bias); !s.ok()) return refused<BackwardProblem>(s);
  if (!SDPA_WITH_BACKWARD && built_with_cuda()) {
    // Said outright: the generic "no fused kernel compiled for ..." would send a reader to the kernel lists.
    return refused<BackwardProblem>(Status::error(
        StatusCode::kNotCompiled, "libsdpa was built without backward kernels (SDPA_BUILD_BACKWARD=OFF)"));
  }
  return select_compiled(backward_kernel_registry(), Direction::kBackward, problem, bias);
}

// What the three public calls of each direction make of a selection.
template <class Problem>
KernelChoice choice_of(const SelectionFor<Problem>& selection, const Problem& problem, const BiasDesc& bias) {
  const auto* k = selection.kernel;
  return {selection.status, k ? kernel_name(*k) : "", k && k->describe ? k->describe(problem, bias) : ""};
}

template <class Problem>
std::size_t workspace_of(const SelectionFor<Problem>& selection, const Problem& problem, const BiasDesc& bias) {
  return selection.kernel ? selection.kernel->workspace_size(problem, bias) : 0;
}

// `needed` (optional) gets the selected kernel's workspace size, 0 without a kernel.
template <class Problem>
Status run_selected(const SelectionFor<Problem>& selection, const Problem& problem, const BiasDesc& bias,
                    void* workspace, std::size_t workspace_bytes, std::size_t* needed = nullptr) {
  if (needed != nullptr) *needed = 0;
  if (!selection.kernel) return selection.status;
  return run_kernel(*selection.kernel, problem, bias, workspace, workspace_bytes, needed);
}

}  // namespace

bool built_with_cuda() { return SDPA_WITH_CUDA; }

std::vector<std::string> compiled_kernels() {
  std::vector<std::string> names;
  for (const KernelEntry& k : kernel_registry()) names.push_back(kernel_name(k));
  for (const BackwardKernelEntry& k : backward_kernel_registry()) names.push_back(kernel_name(k));
  return names;
}

KernelChoice select_forward(const AttentionProblem& problem, const BiasDesc& bias) {
  return choice_of(select_forward_kernel(problem, bias, true), problem, bias);
}

std::size_t forward_workspace_size(const AttentionProblem& problem, const BiasDesc& bias) {
  return workspace_of(select_forward_kernel(problem, bias, true), problem, bias);
}

Status forward(const AttentionProblem& problem, const BiasDesc& bias, void* workspace, std::size_t workspace_bytes) {
  return forward(problem, bias, workspace, workspace_bytes, nullptr);
}

Status forward(const AttentionProblem& problem, const BiasDesc& bias, void* workspace, std::size_t workspace_bytes,
               std::size_t* workspace_needed) {
  return run_selected(select_forward_kernel(problem, bias, true), problem, bias, workspace, workspace_bytes,
                      workspace_needed);
}

Status forward(const AttentionProblem& problem, const BiasDesc& bias) {
  return run_selected(select_forward_kernel(problem, bias, false), problem, bias, nullptr, 0);
}

KernelChoice select_backward(const BackwardProblem& problem, const BiasDesc& bias) {
  return choice_of(select_backward_kernel(problem, bias), problem, bias);
}

std::size_t backward_workspace_size(const BackwardProblem& problem, const BiasDesc& bias) {
  return workspace_of(select_backward_kernel(problem, bias), problem, bias);
}

Status backward(const BackwardProblem& problem, const BiasDesc& bias, void* workspace, std::size_t workspace_bytes) {
  return run_selected(select_backward_kernel(problem, bias), problem, bias, workspace, workspace_bytes);
}

}  // namespace sdpa
