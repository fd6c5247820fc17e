// The attention problem as libsdpa sees it: raw pointers, shapes and element strides.
//
// Layout is (batch, head, seq, dim) for every tensor, the PyTorch SDPA convention; any strides are
// allowed as long as the last (dim) stride is 1. Strides are int64 so tensors past 2^31 elements work.
#pragma once

#include <cstdint>

#include "sdpa/dtype.hpp"

namespace sdpa {

// One (B, H, S, D) operand. The dim stride is always 1 and therefore not stored.
struct TensorView {
  const void* data = nullptr;
  int64_t stride_batch = 0;
  int64_t stride_head = 0;
  int64_t stride_seq = 0;
};

// Query rows up to which forward() (with a workspace) prefers a split-KV decode kernel, speculative
// decoding's few rows included: its tiles pack the query heads of a kv head, so K/V are read
// ceil(group * Sq / 16) times per kv head instead of once per query head.
constexpr int kSplitKvMaxSeqlenQ = 16;

struct AttentionProblem {
  DType dtype = DType::kBFloat16;  // of q, k, v and o
  int batch = 0;
  int heads_q = 0;
  int heads_kv = 0;  // heads_q % heads_kv == 0; query head h reads kv head h / (heads_q / heads_kv)
  int seqlen_q = 0;
  int seqlen_kv = 0;
  int head_dim = 0;  // of q, k and v alike
  TensorView q;
  TensorView k;
  TensorView v;
  TensorView o;          // written; data is cast from const
  float* lse = nullptr;  // optional (B, heads_q, seqlen_q) fp32, contiguous, natural-log log-sum-exp
  float scale = 1.0f;    // applied to q.k before any bias is added
  void* stream = nullptr;  // cudaStream_t; nullptr = the legacy default stream
  // Split-KV decode (seqlen_q <= 16, with a workspace): how many parts each key range is cut into.
  // 0 = chosen from the problem and the SM count; 1 = no split, so a row's result does not depend on how
  // requests are batched (a variable-length batch then always runs the prefill kernels, since the family
  // that would run it depends on its longest sequence); n = at most n (at most one key tile per part).
  int num_splits = 0;

  // Variable-length batches (cu_seqlens_q set; the split-KV decode kernels for seqlen_q <= 16 with a
  // workspace, the prefill kernels otherwise; any page_size): `batch` sequences packed along the token
  // dimension. q and o are (total_q, heads_q, D): stride_seq is the token
  // stride, stride_head the head stride, stride_batch unused; sequence b owns tokens cu_seqlens_q[b] ..
  // cu_seqlens_q[b + 1]. seqlen_q and seqlen_kv are the longest query and used key lengths. Keys and values
  // are packed the same way at cu_seqlens_kv, or (page_table set) a page pool (pages, page_size, heads_kv,
  // D) with stride_batch the page stride, key j of sequence b living at row j % page_size of page
  // page_table[b * page_table_stride + j / page_size]. Sequence b uses seqused_kv[b] keys when set, else
  // cu_seqlens_kv[b + 1] - cu_seqlens_kv[b]; key/value slots past that are never read. All device int32
  // arrays. lse, when set, becomes (total_q, heads_q), the layout of torch's varlen_attn.
  const int* cu_seqlens_q = nullptr;
  const int* cu_seqlens_kv = nullptr;
  const int* seqused_kv = nullptr;
  const int* page_table = nullptr;
  int page_table_stride = 0;
  int page_size = 0;

  bool is_varlen() const { return cu_seqlens_q != nullptr; }
  int group_size() const { return heads_kv > 0 ? heads_q / heads_kv : 0; }
};

// The backward of one forward() call: the same problem, whose o and lse now hold what that forward wrote
// (lse is required), the gradient of the output, and the three gradients to write. grad_k and grad_v have
// the key/value heads (B, heads_kv, Skv, D): a kv head's gradient is summed over its query-head group.
// Every view has the problem's dtype and any strides with a unit dim stride, like q, k, v and o.
struct BackwardProblem {
  AttentionProblem forward;  // read: q, k, v, o, lse; scale, shapes and stream as in the forward call
  TensorView grad_o;         // read, (B, heads_q, Sq, D)
  TensorView grad_q;         // written, (B, heads_q, Sq, D)
  TensorView grad_k;         // written, (B, heads_kv, Skv, D)
  TensorView grad_v;         // written, (B, heads_kv, Skv, D)
  // Optional (data nullptr: not wanted), for a dense additive bias only: the bias's gradient dS for every
  // (b, query head, i, j), written to a full (B, heads_q, Sq, Skv) tensor of the problem's dtype whose
  // key stride is 1 (its seq stride is the row stride). The caller sums it over any broadcast dimension.
  TensorView grad_bias;
  // Bitwise-identical gradients run to run: dQ is accumulated in a fixed order instead of by atomics.
  bool deterministic = false;
};

}  // namespace sdpa
