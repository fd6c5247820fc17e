// Where one sequence of a batch lives: its lengths and the offsets of its rows, for the dense (B, H, S, D)
// layout and for variable-length batches (packed tokens, paged keys); see AttentionProblem. Arch-free,
// host-device: a kernel builds it once per block from the params, and the combine does the same.
#pragma once

#include <cstdint>

#include "common/host_device.hpp"
#include "sdpa/problem.hpp"

namespace sdpa {

// The varlen part of the params, copied from the AttentionProblem.
struct SeqLayout {
  const int* cu_seqlens_q = nullptr;  // null: the dense layout
  const int* cu_seqlens_kv = nullptr;
  const int* seqused_kv = nullptr;
  const int* page_table = nullptr;
  int page_table_stride = 0;
  int page_size = 0;

  static SeqLayout of(const AttentionProblem& p) {
    return {p.cu_seqlens_q, p.cu_seqlens_kv, p.seqused_kv, p.page_table, p.page_table_stride, p.page_size};
  }
};

struct SeqInfo {
  int seqlen_q = 0;
  int seqlen_kv = 0;
  int64_t q_row0 = 0;   // the sequence's first query token (varlen) or 0
  int64_t kv_row0 = 0;  // the sequence's first packed key token (varlen, not paged) or 0
  bool varlen = false;

  // Every sequence of a dense (B, H, S, D) batch.
  static SDPA_HOST_DEVICE SeqInfo dense(int seqlen_q, int seqlen_kv) {
    SeqInfo info;
    info.seqlen_q = seqlen_q;
    info.seqlen_kv = seqlen_kv;
    return info;
  }

  // Sequence `batch`; max_q / max_kv are the problem's seqlen_q / seqlen_kv (the dense lengths).
  static SDPA_HOST_DEVICE SeqInfo of(const SeqLayout& s, int batch, int max_q, int max_kv) {
    SeqInfo info;
    if (s.cu_seqlens_q == nullptr) return dense(max_q, max_kv);
    info.varlen = true;
    info.q_row0 = s.cu_seqlens_q[batch];
    info.seqlen_q = s.cu_seqlens_q[batch + 1] - s.cu_seqlens_q[batch];
    if (s.cu_seqlens_kv != nullptr) {
      info.kv_row0 = s.page_table != nullptr ? 0 : s.cu_seqlens_kv[batch];
      info.seqlen_kv = s.cu_seqlens_kv[batch + 1] - s.cu_seqlens_kv[batch];
    }
    if (s.seqused_kv != nullptr) info.seqlen_kv = s.seqused_kv[batch];
    return info;
  }

  // Element offset of (batch, head, position) in a q/o view: the batch stride, or the packed token.
  SDPA_HOST_DEVICE int64_t q_offset(const TensorView& view, int batch, int head, int position) const {
    const int64_t row = varlen ? q_row0 + position : position;
    return (varlen ? 0 : batch * view.stride_batch) + head * view.stride_head + row * view.stride_seq;
  }
  // Element offset of the first key row of (batch, kv head) in a packed or dense k/v view (not paged).
  SDPA_HOST_DEVICE int64_t kv_offset(const TensorView& view, int batch, int head_kv) const {
    return (varlen ? kv_row0 * view.stride_seq : batch * view.stride_batch) + head_kv * view.stride_head;
  }
  // Index of (batch, head, position) in the LSE: (B, Hq, Sq) dense, (total_q, Hq) varlen.
  SDPA_HOST_DEVICE int64_t lse_index(int batch, int head, int position, int heads_q, int max_q) const {
    return varlen ? (q_row0 + position) * heads_q + head : (int64_t(batch) * heads_q + head) * max_q + position;
  }
};

}  // namespace sdpa
