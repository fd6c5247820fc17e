// Host-side checks kernel families share in their can_implement().
#pragma once

#include <cstdint>
#include <string>

#include "sdpa/problem.hpp"
#include "sdpa/status.hpp"

namespace sdpa {

// Kernels that move 16 bytes per cp.async (or TMA) need every row they read to start 16-byte aligned.
// A stride of a dimension of size 1 is never multiplied by a nonzero index and does not matter.
inline Status check_rows_16b_aligned(const AttentionProblem& p) {
  auto aligned = [](const TensorView& view, int batch, int heads, int seqlen) {
    auto ok = [](int64_t stride, int extent) { return extent == 1 || stride % 8 == 0; };
    return reinterpret_cast<std::uintptr_t>(view.data) % 16 == 0 && ok(view.stride_batch, batch) &&
           ok(view.stride_head, heads) && ok(view.stride_seq, seqlen);
  };
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
      return Status::error(StatusCode::kUnsupported,
                           std::string(operand.name) +
                               " is not 16-byte aligned (data pointer and batch/head/seq strides must be "
                               "multiples of 8 elements)");
    }
  }
  return Status::success();
}

}  // namespace sdpa
