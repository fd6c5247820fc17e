// Appending new tokens' keys and values to a paged KV cache: the layout AttentionProblem::page_table
// describes, so a server's step is kv_cache_append() then forward() over the same pages. The twin of the
// Python sdpa_core.kv_cache_append.
#pragma once

#include "sdpa/dtype.hpp"
#include "sdpa/problem.hpp"
#include "sdpa/status.hpp"

namespace sdpa {

// Sequence b's new tokens are rows cu_seqlens_new[b] .. cu_seqlens_new[b + 1] of key/value; token t goes to
// logical position p = cache_seqlens[b] + t, i.e. row p % page_size of page page_table[b *
// page_table_stride + p / page_size] of each pool. The pages a sequence grows into must be assigned.
struct KvCacheAppend {
  DType dtype = DType::kBFloat16;  // of the pools and the new tokens (kFloat32 for the host reference)
  int batch = 0;                   // sequences
  int heads_kv = 0;
  int head_dim = 0;
  int total_new = 0;  // rows of key/value: cu_seqlens_new[batch]
  TensorView key_cache, value_cache;  // written: pools (pages, page_size, heads_kv, D); stride_batch = page stride
  TensorView key, value;              // (total_new, heads_kv, D) packed: stride_seq the token stride
  const int* page_table = nullptr;    // int32 (batch, page_table_stride)
  int page_table_stride = 0;
  int page_size = 0;
  const int* cache_seqlens = nullptr;   // int32 (batch,): tokens each sequence holds before the call
  const int* cu_seqlens_new = nullptr;  // int32 (batch + 1,): cumulative new-token counts from 0
  int* new_seqlens = nullptr;  // optional int32 (batch,) out: cache_seqlens + the new counts (the next
                               // seqused_kv); must not alias cache_seqlens
  void* stream = nullptr;      // cudaStream_t
};

// Checks shapes, strides and pointers (no memory access).
Status validate_kv_cache_append(const KvCacheAppend& append);

// On the device, asynchronously on append.stream; no allocation, so it can be captured in a CUDA graph.
// kNotCompiled in a build without CUDA.
Status kv_cache_append(const KvCacheAppend& append);

// The same on host memory (every pointer a host pointer, any dtype): what a CPU build of a server runs.
Status reference_kv_cache_append(const KvCacheAppend& append);

}  // namespace sdpa
