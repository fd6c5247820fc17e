// libsdpa's public entry points. Include this one header.
//
//   sdpa::AttentionProblem problem = ...;   // device pointers, shapes, strides, stream
//   sdpa::BiasDesc bias;                     // kind + causal variant + parameters
//   bias.kind = sdpa::BiasKind::kAlibi; bias.causal = sdpa::CausalVariant::kUpperLeft; ...
//   sdpa::Status status = sdpa::forward(problem, bias);
//
// forward() never falls back: when no fused kernel covers the problem it returns kNotCompiled or
// kUnsupported with the reason, and select_forward() gives the same answer without launching.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "sdpa/bias.hpp"
#include "sdpa/dtype.hpp"
#include "sdpa/kv_cache.hpp"
#include "sdpa/problem.hpp"
#include "sdpa/status.hpp"

namespace sdpa {

// Checks shapes, strides and bias parameters against the documented preconditions (no device access).
Status validate(const AttentionProblem& problem, const BiasDesc& bias);

// Which fused kernel forward() with a workspace would run. When none would, `kernel` is empty and `status` says why.
struct KernelChoice {
  Status status;
  std::string kernel;   // e.g. "fwd_sm80<AlibiCausalUpperLeft, bfloat16, hd128>"
  std::string details;  // what that kernel does for this problem where its family says more than its name
                        // (the split-KV decode kernels: packing, split count, key layout); else empty
};
KernelChoice select_forward(const AttentionProblem& problem, const BiasDesc& bias);

// Runs the fused forward kernel asynchronously on problem.stream. Writes problem.o and, when
// problem.lse is set, the per-row log-sum-exp (-inf for rows where every key is masked; their output is 0).
Status forward(const AttentionProblem& problem, const BiasDesc& bias);

// Device memory the kernel forward() would run needs beside the problem's tensors, in bytes (0 when none
// would run). libsdpa never allocates: a caller that gets a nonzero size passes a buffer of at least
// that many bytes to the overload below, which refuses a smaller one. Two families take one:
//  - the split-KV decode kernels (seqlen_q <= 16): their partial results per split. The overload without
//    a workspace never picks them (it runs the prefill kernels, which are slower for decoding);
//    select_forward() names the kernel the workspace overload runs. The size depends on the SM count.
//  - the Hopper prefill kernels (fwd_sm90, 16 bytes): the tile counter of their persistent schedule, one
//    block per SM, which they zero on problem.stream before each launch that uses it. Optional: the
//    overload without a workspace runs them with one block per tile.
// One workspace may serve consecutive calls on one stream; calls that may overlap need one each.
std::size_t forward_workspace_size(const AttentionProblem& problem, const BiasDesc& bias);
Status forward(const AttentionProblem& problem, const BiasDesc& bias, void* workspace, std::size_t workspace_bytes);
// The same, with one kernel selection instead of two for a caller that keeps a workspace between calls:
// *workspace_needed gets forward_workspace_size(); when that exceeds workspace_bytes nothing runs and the
// status is kInvalidArgument, so the caller can grow its buffer and call again.
Status forward(const AttentionProblem& problem, const BiasDesc& bias, void* workspace, std::size_t workspace_bytes,
               std::size_t* workspace_needed);

// The backward pass (dQ, dK, dV) of a forward() call with the same bias, on fused kernels only, like
// forward(). A dense bias's own gradient is not computed here. The kernels need a workspace (fp32 dQ
// accumulators and per-row dot(dO, O)) of backward_workspace_size() bytes, which the caller owns.
Status validate_backward(const BackwardProblem& problem, const BiasDesc& bias);
KernelChoice select_backward(const BackwardProblem& problem, const BiasDesc& bias);
std::size_t backward_workspace_size(const BackwardProblem& problem, const BiasDesc& bias);
Status backward(const BackwardProblem& problem, const BiasDesc& bias, void* workspace, std::size_t workspace_bytes);

// The slow, obviously-correct oracle on host memory: q, k, v, o and a dense bias are fp32 (a mask is
// DType::kBool), the arithmetic is fp64, and the bias formulas are evaluated directly, not through the
// kernels' bias traits. problem.dtype must be kFloat32. A variable-length batch (is_varlen()) reads its
// length and page arrays on the host too.
Status reference_forward(const AttentionProblem& problem, const BiasDesc& bias);

// The oracle of backward(), on host memory with the conventions of reference_forward(): fp32 tensors,
// fp64 arithmetic, the bias formulas evaluated directly. Reads q, k, v, grad_o (and neither o nor lse:
// it recomputes the softmax) and writes grad_q, grad_k, grad_v.
Status reference_backward(const BackwardProblem& problem, const BiasDesc& bias);

// Names of the fused kernels compiled into this build, one per (arch, bias trait, dtype, head dim).
std::vector<std::string> compiled_kernels();

// Whether this build holds CUDA kernels at all.
bool built_with_cuda();

}  // namespace sdpa
