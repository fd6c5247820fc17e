// validate -> pick a compiled kernel -> launch. Every refusal carries a reason a person can act on.
#include <cstdint>
#include <string>

#include "device_info.hpp"
#include "kernel_registry.hpp"
#include "sdpa/sdpa.hpp"

namespace sdpa {
namespace {

Status unsupported(std::string message) { return Status::error(StatusCode::kUnsupported, std::move(message)); }

// The kernels move 16 bytes per cp.async, so every row they read must start 16-byte aligned. A stride
// of a dimension of size 1 is never multiplied by a nonzero index and does not matter.
bool aligned(const TensorView& view, int batch, int heads, int seqlen) {
  auto ok = [](int64_t stride, int extent) { return extent == 1 || stride % 8 == 0; };
  return reinterpret_cast<std::uintptr_t>(view.data) % 16 == 0 && ok(view.stride_batch, batch) &&
         ok(view.stride_head, heads) && ok(view.stride_seq, seqlen);
}

Status check_alignment(const AttentionProblem& p) {
  const struct {
    const TensorView& view;
    const char* name;
    int heads;
    int seqlen;
  } operands[] = {{p.q, "q", p.heads_q, p.seqlen_q},
                  {p.k, "k", p.heads_kv, p.seqlen_kv},
                  {p.v, "v", p.heads_kv, p.seqlen_kv},
                  {p.o, "o", p.heads_q, p.seqlen_q}};
  for (const auto& operand : operands) {
    if (!aligned(operand.view, p.batch, operand.heads, operand.seqlen)) {
      return unsupported(std::string(operand.name) +
                         " is not 16-byte aligned (data pointer and batch/head/seq strides must be multiples "
                         "of 8 elements)");
    }
  }
  return Status::success();
}

std::string kernel_name(const FwdKernel& k) {
  return std::string(k.family) + "<" + k.bias_trait + ", " + dtype_name(k.dtype) + ", hd" +
         std::to_string(k.head_dim) + ">";
}

std::string compiled_head_dims(const std::string& trait, DType dtype) {
  std::string dims;
  for (const FwdKernel& k : fwd_kernel_registry()) {
    if (trait == k.bias_trait && dtype == k.dtype) dims += (dims.empty() ? "" : ", ") + std::to_string(k.head_dim);
  }
  return dims.empty() ? "none" : dims;
}

}  // namespace

bool built_with_cuda() { return SDPA_WITH_CUDA; }

std::vector<std::string> compiled_kernels() {
  std::vector<std::string> names;
  for (const FwdKernel& k : fwd_kernel_registry()) names.push_back(kernel_name(k));
  return names;
}

namespace {

struct Selection {
  Status status;
  const FwdKernel* kernel = nullptr;
};

Selection select(const AttentionProblem& problem, const BiasDesc& bias) {
  if (Status s = validate(problem, bias); !s.ok()) return {s};
  if (!built_with_cuda()) return {Status::error(StatusCode::kNotCompiled, "libsdpa was built without CUDA kernels")};
  if (problem.dtype != DType::kFloat16 && problem.dtype != DType::kBFloat16) {
    return {unsupported(std::string("fused kernels read float16 or bfloat16 inputs; got ") + dtype_name(problem.dtype))};
  }
  const int capability = current_compute_capability();
  if (capability == 0) return {unsupported("no CUDA device is visible")};
  if (Status s = check_alignment(problem); !s.ok()) return {s};

  const std::string trait = bias_trait_name(bias);
  for (const FwdKernel& k : fwd_kernel_registry()) {
    if (trait != k.bias_trait || problem.dtype != k.dtype || problem.head_dim != k.head_dim) continue;
    if (capability < k.min_compute_capability) {
      return {unsupported(kernel_name(k) + " needs compute capability " + std::to_string(k.min_compute_capability) +
                          ", the device has " + std::to_string(capability))};
    }
    return {Status::success(), &k};
  }
  return {Status::error(StatusCode::kNotCompiled, "no fused kernel compiled for " + trait + ", " +
                                                      dtype_name(problem.dtype) + ", head_dim " +
                                                      std::to_string(problem.head_dim) + " (compiled head dims: " +
                                                      compiled_head_dims(trait, problem.dtype) + ")")};
}

}  // namespace

KernelChoice select_forward(const AttentionProblem& problem, const BiasDesc& bias) {
  Selection selection = select(problem, bias);
  return {selection.status, selection.kernel ? kernel_name(*selection.kernel) : ""};
}

Status forward(const AttentionProblem& problem, const BiasDesc& bias) {
  Selection selection = select(problem, bias);
  return selection.kernel ? selection.kernel->launch(problem, bias) : selection.status;
}

}  // namespace sdpa
