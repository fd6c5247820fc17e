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

// One K or V tile of a paged cache: every key row has its own page (key j of the sequence: row
// j % page_size of page page_table[j / page_size]), so each row's address comes from the page table. A
// thread copies one 16-byte column of kPasses rows: it looks up all its rows' pages first, so those
// dependent loads are in flight together, then issues the copies (kLookupsFirst; 2 registers per row, which
// a kernel short of registers saves by looking up and copying row by row). Rows past the sequence's keys
// are zero-filled and their pages never looked up.
template <class Traits, bool kLookupsFirst, class Params, class TensorS>
__device__ __forceinline__ void load_paged_tile(Params const& p, TensorView const& view, int batch, int head_kv,
                                                int n, int seqlen_kv, TensorS& dst) {
  using Element = typename Traits::Element;
  constexpr int kChunksPerRow = Traits::kHeadDim / Traits::kGmemElemsPerVec;
  static_assert(Traits::kNThreads % kChunksPerRow == 0, "a row's 16-byte chunks span whole threads");
  constexpr int kRowsPerPass = Traits::kNThreads / kChunksPerRow;
  static_assert(Traits::kBlockN % kRowsPerPass == 0, "the tile is a whole number of passes");
  constexpr int kPasses = Traits::kBlockN / kRowsPerPass;
  const Element* pool = static_cast<const Element*>(view.data);
  const int* pages = p.seq.page_table + int64_t(batch) * p.seq.page_table_stride;
  const int row = threadIdx.x / kChunksPerRow;
  const int col = (threadIdx.x % kChunksPerRow) * Traits::kGmemElemsPerVec;
  // Offset of pass i's row in the pool, -1 past the sequence.
  auto row_offset = [&](int i) {
    const int j = n * Traits::kBlockN + row + i * kRowsPerPass;
    return j < seqlen_kv ? int64_t(pages[j / p.seq.page_size]) * view.stride_batch +
                               int64_t(j % p.seq.page_size) * view.stride_seq
                         : int64_t(-1);
  };
  const Element* head = pool + int64_t(head_kv) * view.stride_head + col;
  auto copy_row = [&](int i, int64_t offset) {
    cp_async_16_zfill(&dst(row + i * kRowsPerPass, col), offset >= 0 ? head + offset : pool, offset >= 0);
  };
  if constexpr (kLookupsFirst) {
    int64_t offset[kPasses];
#pragma unroll
    for (int i = 0; i < kPasses; ++i) offset[i] = row_offset(i);
#pragma unroll
    for (int i = 0; i < kPasses; ++i) copy_row(i, offset[i]);
  } else {
#pragma unroll 1
    for (int i = 0; i < kPasses; ++i) copy_row(i, row_offset(i));
  }
}

}  // namespace sm80
}  // namespace sdpa
