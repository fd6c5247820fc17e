// validate -> key -> archs in preference order, each with its can_implement -> run. Every refusal carries
// a reason a person can act on.
#include <algorithm>
#include <array>
#include <cstddef>
#include <string>
#include <vector>

#include "device_info.hpp"
#include "kernel_registry.hpp"
#include "sdpa/sdpa.hpp"

namespace sdpa {
namespace {

Status unsupported(std::string message) { return Status::error(StatusCode::kUnsupported, std::move(message)); }

Selection refused(Status status) {
  Selection selection;
  selection.status = std::move(status);
  return selection;
}

bool same_kernel_except_arch(const KernelKey& a, const KernelKey& b) {
  return a.direction == b.direction && a.bias == b.bias && a.dtype == b.dtype && a.head_dim == b.head_dim &&
         a.variant == b.variant;
}

std::string compiled_head_dims(BiasId bias, DType dtype) {
  std::vector<int> dims;
  for (const KernelEntry& k : kernel_registry()) {
    if (k.key.bias == bias && k.key.dtype == dtype &&
        std::find(dims.begin(), dims.end(), k.key.head_dim) == dims.end()) {
      dims.push_back(k.key.head_dim);
    }
  }
  std::string text;
  for (int d : dims) text += (text.empty() ? "" : ", ") + std::to_string(d);
  return text.empty() ? "none" : text;
}

KernelKey forward_key(const AttentionProblem& problem, const BiasDesc& bias) {
  KernelKey key;
  key.direction = Direction::kForward;
  key.bias = bias_id(bias);
  key.dtype = problem.dtype;
  key.head_dim = problem.head_dim;
  return key;
}

}  // namespace

std::string kernel_name(const KernelEntry& k) {
  return std::string(k.family) + "<" + bias_id_name(k.key.bias) + ", " + dtype_name(k.key.dtype) + ", hd" +
         std::to_string(k.key.head_dim) + ">";
}

Selection select_kernel(const std::vector<KernelEntry>& registry, const KernelKey& key, int capability,
                        const AttentionProblem& problem, const BiasDesc& bias) {
  // Runs on every launch: the entries for this key (one per compiled arch) go into a small array, kept
  // newest arch first by insertion, so a selection allocates nothing and sorts nothing.
  constexpr std::size_t kMaxArchs = 8;
  std::array<const KernelEntry*, kMaxArchs> candidates{};
  std::size_t count = 0;
  for (const KernelEntry& k : registry) {
    if (!same_kernel_except_arch(k.key, key) || count == kMaxArchs) continue;
    std::size_t at = count++;
    for (; at > 0 && candidates[at - 1]->key.arch < k.key.arch; --at) candidates[at] = candidates[at - 1];
    candidates[at] = &k;
  }
  if (count == 0) {
    return refused(Status::error(StatusCode::kNotCompiled, std::string("no fused kernel compiled for ") +
                                                               bias_id_name(key.bias) + ", " + dtype_name(key.dtype) +
                                                               ", head_dim " + std::to_string(key.head_dim)));
  }
  // Newest arch first: a newer kernel is preferred wherever the device can run it.
  Selection selection;
  std::vector<std::string> named;  // the refusals prefixed with their kernel, for the joint message
  for (std::size_t i = 0; i < count; ++i) {
    const KernelEntry* k = candidates[i];
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
  selection.status = unsupported(message);
  return selection;
}

bool built_with_cuda() { return SDPA_WITH_CUDA; }

std::vector<std::string> compiled_kernels() {
  std::vector<std::string> names;
  for (const KernelEntry& k : kernel_registry()) names.push_back(kernel_name(k));
  return names;
}

namespace {

Selection select_forward_kernel(const AttentionProblem& problem, const BiasDesc& bias) {
  if (Status s = validate(problem, bias); !s.ok()) return refused(s);
  if (!built_with_cuda()) return refused(Status::error(StatusCode::kNotCompiled, "libsdpa was built without CUDA kernels"));
  if (problem.dtype != DType::kFloat16 && problem.dtype != DType::kBFloat16) {
    return refused(unsupported(std::string("fused kernels read float16 or bfloat16 inputs; got ") +
                               dtype_name(problem.dtype)));
  }
  const int capability = current_compute_capability();
  if (capability == 0) return refused(unsupported("no CUDA device is visible"));
  const KernelKey key = forward_key(problem, bias);
  Selection selection = select_kernel(kernel_registry(), key, capability, problem, bias);
  if (selection.status.code == StatusCode::kNotCompiled) {
    selection.status.message += " (compiled head dims: " + compiled_head_dims(key.bias, key.dtype) + ")";
  }
  return selection;
}

}  // namespace

KernelChoice select_forward(const AttentionProblem& problem, const BiasDesc& bias) {
  Selection selection = select_forward_kernel(problem, bias);
  return {selection.status, selection.kernel ? kernel_name(*selection.kernel) : ""};
}

std::size_t forward_workspace_size(const AttentionProblem& problem, const BiasDesc& bias) {
  Selection selection = select_forward_kernel(problem, bias);
  return selection.kernel ? selection.kernel->workspace_size(problem, bias) : 0;
}

Status forward(const AttentionProblem& problem, const BiasDesc& bias, void* workspace, std::size_t workspace_bytes) {
  Selection selection = select_forward_kernel(problem, bias);
  if (!selection.kernel) return selection.status;
  const std::size_t needed = selection.kernel->workspace_size(problem, bias);
  if (workspace_bytes < needed || (needed > 0 && workspace == nullptr)) {
    return Status::error(StatusCode::kInvalidArgument,
                         kernel_name(*selection.kernel) + " needs a workspace of " + std::to_string(needed) +
                             " bytes (forward_workspace_size()); got " + std::to_string(workspace_bytes));
  }
  return selection.kernel->run(problem, bias, workspace, workspace_bytes);
}

Status forward(const AttentionProblem& problem, const BiasDesc& bias) { return forward(problem, bias, nullptr, 0); }

}  // namespace sdpa
