// Argument checks shared by the kernels and the reference. Python validates first with friendlier
// messages; these guard C++ callers, so every message names the field and what it must be.
#include <string>

#include "sdpa/sdpa.hpp"

namespace sdpa {
namespace {

Status invalid(std::string message) { return Status::error(StatusCode::kInvalidArgument, std::move(message)); }

Status check_tensor(const TensorView& view, const char* name) {
  if (view.data == nullptr) return invalid(std::string(name) + ".data is null");
  return Status::success();
}

Status check_shapes(const AttentionProblem& p) {
  if (p.batch < 1 || p.heads_q < 1 || p.heads_kv < 1 || p.seqlen_q < 1 || p.seqlen_kv < 1 || p.head_dim < 1) {
    return invalid("batch, heads_q, heads_kv, seqlen_q, seqlen_kv and head_dim must all be >= 1; got batch=" +
                   std::to_string(p.batch) + " heads_q=" + std::to_string(p.heads_q) +
                   " heads_kv=" + std::to_string(p.heads_kv) + " seqlen_q=" + std::to_string(p.seqlen_q) +
                   " seqlen_kv=" + std::to_string(p.seqlen_kv) + " head_dim=" + std::to_string(p.head_dim));
  }
  if (p.heads_q % p.heads_kv != 0) {
    return invalid("heads_q (" + std::to_string(p.heads_q) + ") must be a multiple of heads_kv (" +
                   std::to_string(p.heads_kv) + ")");
  }
  if (p.dtype == DType::kBool) return invalid("dtype must be float16, bfloat16 or float32, not bool");
  if (p.num_splits < 0) return invalid("num_splits must be >= 0 (0: chosen by libsdpa); got " + std::to_string(p.num_splits));
  return Status::success();
}

Status check_varlen(const AttentionProblem& p, const BiasDesc& bias) {
  if (!p.is_varlen()) {
    if (p.cu_seqlens_kv || p.seqused_kv || p.page_table) {
      return invalid("cu_seqlens_kv, seqused_kv and page_table describe a variable-length batch: set cu_seqlens_q too");
    }
    return Status::success();
  }
  // A (B, H, Sq, Skv) tensor has no row for packed tokens; varlen batches take causal and ALiBi biases.
  if (bias.kind == BiasKind::kDense) return invalid("bias.kind: a dense bias has no variable-length layout");
  if (p.page_table == nullptr && p.cu_seqlens_kv == nullptr) {
    return invalid("a variable-length batch needs cu_seqlens_kv (packed keys) or page_table (a paged cache)");
  }
  if (p.page_table != nullptr) {
    if (p.page_size < 1) return invalid("page_size must be >= 1 with a page_table; got " + std::to_string(p.page_size));
    if (p.seqused_kv == nullptr && p.cu_seqlens_kv == nullptr) {
      return invalid("a paged cache needs seqused_kv or cu_seqlens_kv for the sequences' key lengths");
    }
  }
  return Status::success();
}

Status check_bias(const AttentionProblem& p, const BiasDesc& bias) {
  switch (bias.kind) {
    case BiasKind::kNone: break;
    case BiasKind::kAlibi:
      if (bias.alibi.slopes == nullptr) return invalid("bias.alibi.slopes is null");
      break;
    case BiasKind::kDense:
      if (bias.dense.data == nullptr) return invalid("bias.dense.data is null");
      if (bias.dense.dtype != p.dtype && bias.dense.dtype != DType::kBool) {
        return invalid(std::string("bias.dense.dtype must be bool or the problem dtype (") + dtype_name(p.dtype) +
                       "); got " + dtype_name(bias.dense.dtype));
      }
      break;
    default: return invalid("bias.kind is not a BiasKind");
  }
  if (bias.causal != CausalVariant::kNone && bias.causal != CausalVariant::kUpperLeft &&
      bias.causal != CausalVariant::kLowerRight) {
    return invalid("bias.causal is not a CausalVariant");
  }
  return Status::success();
}

// What the backward reads or writes beyond the forward call's operands. The views share the problem's
// dtype by contract (they have no dtype of their own), so validate()'s dtype rule covers them.
Status check_backward_operands(const BackwardProblem& p, const BiasDesc& bias) {
  if (p.forward.lse == nullptr) {
    return invalid("lse is null: the backward reads the log-sum-exp its forward() call wrote");
  }
  for (Status s : {check_tensor(p.grad_o, "grad_o"), check_tensor(p.grad_q, "grad_q"),
                   check_tensor(p.grad_k, "grad_k"), check_tensor(p.grad_v, "grad_v")}) {
    if (!s.ok()) return s;
  }
  // A bias gradient exists for an additive dense bias alone: a mask or ALiBi has no values to learn here.
  if (p.grad_bias.data != nullptr && (bias.kind != BiasKind::kDense || bias.dense.is_mask())) {
    return invalid("grad_bias is set but the bias is not a dense additive bias (kind dense, dtype not bool)");
  }
  return Status::success();
}

}  // namespace

Status validate(const AttentionProblem& problem, const BiasDesc& bias) {
  for (Status s : {check_shapes(problem), check_tensor(problem.q, "q"), check_tensor(problem.k, "k"),
                   check_tensor(problem.v, "v"), check_tensor(problem.o, "o"), check_bias(problem, bias),
                   check_varlen(problem, bias)}) {
    if (!s.ok()) return s;
  }
  return Status::success();
}

Status validate_backward(const BackwardProblem& problem, const BiasDesc& bias) {
  if (Status s = validate(problem.forward, bias); !s.ok()) return s;
  if (problem.forward.is_varlen()) return invalid("the backward takes (B, H, S, D) batches, not variable-length ones");
  return check_backward_operands(problem, bias);
}

}  // namespace sdpa
