// Key/value tiles of a paged KV cache into shared memory, for every sm80 kernel that reads one (the
// split-KV decode kernel, the forward on a variable-length batch): cp.async with a per-row address, since
// every key row may live on its own page.
#pragma once

#include <cstdint>

#include "sdpa/problem.hpp"

namespace sdpa {
namespace sm80 {

// 16 bytes global -> shared, asynchronously; zeros instead when !valid (gmem is then not read).
__device__ __forceinline__ void cp_async_16_zfill(void* smem, const void* gmem, bool valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(valid ? 16 : 0));
}

// One K or V tile of a paged cache: every key row has its own page, so each 16-byte piece computes its
// address (key j of the sequence: row j % page_size of page page_table[j / page_size]). Rows past the
// sequence's keys are zero-filled and their pages never looked up.
template <class Traits, class Params, class TensorS>
__device__ __forceinline__ void load_paged_tile(Params const& p, TensorView const& view, int batch, int head_kv,
                                                int n, int seqlen_kv, TensorS& dst) {
  using Element = typename Traits::Element;
  constexpr int kVec = Traits::kGmemElemsPerVec;
  constexpr int kChunksPerRow = Traits::kHeadDim / kVec;
  const Element* pool = static_cast<const Element*>(view.data);
  const int* pages = p.seq.page_table + int64_t(batch) * p.seq.page_table_stride;
  for (int c = threadIdx.x; c < Traits::kBlockN * kChunksPerRow; c += Traits::kNThreads) {
    const int r = c / kChunksPerRow;
    const int col = (c % kChunksPerRow) * kVec;
    const int j = n * Traits::kBlockN + r;
    const bool valid = j < seqlen_kv;
    const Element* src = pool;
    if (valid) {
      const int64_t page = pages[j / p.seq.page_size];
      src = pool + page * view.stride_batch + (j % p.seq.page_size) * view.stride_seq + head_kv * view.stride_head + col;
    }
    cp_async_16_zfill(&dst(r, col), src, valid);
  }
}

}  // namespace sm80
}  // namespace sdpa
