// The one selection algorithm and the one launch check, shared by the forward and backward tables:
// written once as templates over the problem type and instantiated here for both.
#include "kernel_registry.hpp"

#include <array>
#include <cstddef>
#include <string>
#include <vector>

namespace sdpa {
namespace {

bool same_kernel_except_arch(const KernelKey& a, const KernelKey& b) {
  return a.direction == b.direction && a.bias == b.bias && a.dtype == b.dtype && a.head_dim == b.head_dim &&
         a.variant == b.variant;
}

// The public call a caller asks for the workspace size with, so the refusal says what to call.
const char* workspace_query(Direction direction) {
  return direction == Direction::kBackward ? "backward_workspace_size()" : "forward_workspace_size()";
}

}  // namespace

std::string kernel_name(const KernelKey& key, const char* family) {
  return std::string(family) + "<" + bias_id_name(key.bias) + ", " + dtype_name(key.dtype) + ", hd" +
         std::to_string(key.head_dim) + ">";
}

template <class Problem>
SelectionFor<Problem> select_kernel(const std::vector<KernelEntryFor<Problem>>& registry, const KernelKey& key,
                                    int capability, const Problem& problem, const BiasDesc& bias) {
  using Entry = KernelEntryFor<Problem>;
  // Runs on every launch: the entries for this key (one per compiled arch) go into a small array, kept
  // newest arch first by insertion, so a selection allocates nothing and sorts nothing.
  constexpr std::size_t kMaxArchs = 8;
  std::array<const Entry*, kMaxArchs> candidates{};
  std::size_t count = 0;
  for (const Entry& k : registry) {
    if (!same_kernel_except_arch(k.key, key) || count == kMaxArchs) continue;
    std::size_t at = count++;
    for (; at > 0 && candidates[at - 1]->key.arch < k.key.arch; --at) candidates[at] = candidates[at - 1];
    candidates[at] = &k;
  }
  SelectionFor<Problem> selection;
  if (count == 0) {
    selection.status = Status::error(StatusCode::kNotCompiled, std::string("no fused kernel compiled for ") +
                                                                   bias_id_name(key.bias) + ", " + dtype_name(key.dtype) +
                                                                   ", head_dim " + std::to_string(key.head_dim));
    return selection;
  }
  // Newest arch first: a newer kernel is preferred wherever the device can run it.
  std::vector<std::string> named;  // the refusals prefixed with their kernel, for the joint message
  for (std::size_t i = 0; i < count; ++i) {
    const Entry* k = candidates[i];
    std::string reason;
    if (capability < k->key.arch) {
      reason = kernel_name(*k) + " needs compute capability " + std::to_string(k->key.arch) + ", the device has " +
               std::to_string(capability);
      named.push_back(reason);
    } else if (Status s = k->can_implement(problem, bias); !s.ok()) {
      reason = s.message;
      named.push_back(kernel_name(*k) + ": " + s.message);
    } else {
      selection.status = Status::success();
      selection.kernel = k;
      return selection;
    }
    selection.refusals.push_back(reason);
  }
  std::string message = selection.refusals.size() == 1 ? selection.refusals.front() : "";
  if (selection.refusals.size() > 1) {
    for (const std::string& r : named) message += (message.empty() ? "" : "; ") + r;
  }
  selection.status = Status::error(StatusCode::kUnsupported, message);
  return selection;
}

template <class Problem>
Status run_kernel(const KernelEntryFor<Problem>& kernel, const Problem& problem, const BiasDesc& bias,
                  void* workspace, std::size_t workspace_bytes, std::size_t* needed_out) {
  const std::size_t needed = kernel.workspace_size(problem, bias);
  if (needed_out != nullptr) *needed_out = needed;
  if (kernel.workspace_optional && needed_out == nullptr && workspace == nullptr && workspace_bytes == 0) {
    return kernel.run(problem, bias, nullptr, 0);
  }
  if (workspace_bytes < needed || (needed > 0 && workspace == nullptr)) {
    return Status::error(StatusCode::kInvalidArgument,
                         kernel_name(kernel) + " needs a workspace of " + std::to_string(needed) + " bytes (" +
                             workspace_query(kernel.key.direction) + "); got " + std::to_string(workspace_bytes) +
                             (workspace == nullptr && workspace_bytes > 0 ? " and a null pointer" : ""));
  }
  return kernel.run(problem, bias, workspace, workspace_bytes);
}

template Selection select_kernel(const std::vector<KernelEntry>&, const KernelKey&, int, const AttentionProblem&,
                                 const BiasDesc&);
template BackwardSelection select_kernel(const std::vector<BackwardKernelEntry>&, const KernelKey&, int,
                                         const BackwardProblem&, const BiasDesc&);
template Status run_kernel(const KernelEntry&, const AttentionProblem&, const BiasDesc&, void*, std::size_t,
                           std::size_t*);
template Status run_kernel(const BackwardKernelEntry&, const BackwardProblem&, const BiasDesc&, void*, std::size_t,
                           std::size_t*);

}  // namespace sdpa
