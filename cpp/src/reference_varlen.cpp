#include "reference_varlen.hpp"

#include <cstdint>
#include <limits>
#include <vector>

#include "common/seq_info.hpp"

namespace sdpa {
namespace {

// Key rows 0 .. seq.seqlen_kv of sequence b, every kv head, copied to (seqlen_kv, heads_kv, D) floats.
std::vector<float> gather_keys(const AttentionProblem& p, const TensorView& view, const SeqInfo& seq, int b) {
  std::vector<float> rows(static_cast<size_t>(seq.seqlen_kv) * p.heads_kv * p.head_dim);
  const float* base = static_cast<const float*>(view.data);
  for (int j = 0; j < seq.seqlen_kv; ++j) {
    for (int h = 0; h < p.heads_kv; ++h) {
      int64_t offset = h * view.stride_head;
      if (p.page_table != nullptr) {
        const int64_t page = p.page_table[static_cast<int64_t>(b) * p.page_table_stride + j / p.page_size];
        offset += page * view.stride_batch + (j % p.page_size) * view.stride_seq;
      } else {
        offset += (seq.kv_row0 + j) * view.stride_seq;
      }
      for (int d = 0; d < p.head_dim; ++d) rows[(static_cast<size_t>(j) * p.heads_kv + h) * p.head_dim + d] = base[offset + d];
    }
  }
  return rows;
}

// Sequence b alone: batch 1, its lengths, q and o at its first token, keys from `keys` / `values`.
AttentionProblem sequence_problem(const AttentionProblem& p, const SeqInfo& seq, const std::vector<float>& keys,
                                  const std::vector<float>& values, float* lse) {
  AttentionProblem one = p;
  one.batch = 1;
  one.seqlen_q = seq.seqlen_q;
  one.seqlen_kv = seq.seqlen_kv;
  one.cu_seqlens_q = one.cu_seqlens_kv = one.seqused_kv = one.page_table = nullptr;
  one.q.data = static_cast<const float*>(p.q.data) + seq.q_row0 * p.q.stride_seq;
  one.o.data = static_cast<const float*>(p.o.data) + seq.q_row0 * p.o.stride_seq;
  const int64_t row = int64_t(p.heads_kv) * p.head_dim;
  one.k = {keys.data(), 0, p.head_dim, row};
  one.v = {values.data(), 0, p.head_dim, row};
  one.lse = lse;
  return one;
}

}  // namespace

Status reference_forward_varlen(const AttentionProblem& p, const BiasDesc& bias) {
  if (bias.kind == BiasKind::kDense) {
    return Status::error(StatusCode::kInvalidArgument, "reference_forward: a dense bias has no variable-length layout");
  }
  const SeqLayout layout = SeqLayout::of(p);
  for (int b = 0; b < p.batch; ++b) {
    const SeqInfo seq = SeqInfo::of(layout, b, p.seqlen_q, p.seqlen_kv);
    if (seq.seqlen_q == 0) continue;
    std::vector<float> lse(static_cast<size_t>(p.heads_q) * seq.seqlen_q, -std::numeric_limits<float>::infinity());
    if (seq.seqlen_kv == 0) {  // no key: zeros and -inf, as for a fully masked row
      for (int i = 0; i < seq.seqlen_q; ++i) {
        for (int h = 0; h < p.heads_q; ++h) {
          float* o = const_cast<float*>(static_cast<const float*>(p.o.data)) + seq.q_offset(p.o, b, h, i);
          for (int d = 0; d < p.head_dim; ++d) o[d] = 0.0f;
        }
      }
    } else {
      const std::vector<float> keys = gather_keys(p, p.k, seq, b), values = gather_keys(p, p.v, seq, b);
      BiasDesc one_bias = bias;
      one_bias.alibi.slopes = bias.alibi.slopes ? bias.alibi.slopes + b * bias.alibi.stride_batch : nullptr;
      if (Status s = reference_forward(sequence_problem(p, seq, keys, values, lse.data()), one_bias); !s.ok()) {
        return s;
      }
    }
    if (p.lse == nullptr) continue;
    for (int h = 0; h < p.heads_q; ++h) {
      for (int i = 0; i < seq.seqlen_q; ++i) {
        p.lse[seq.lse_index(b, h, i, p.heads_q, p.seqlen_q)] = lse[static_cast<size_t>(h) * seq.seqlen_q + i];
      }
    }
  }
  return Status::success();
}

}  // namespace sdpa
