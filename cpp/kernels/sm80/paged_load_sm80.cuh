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

// The rows of one K/V tile of a paged cache: key j of the sequence lives at row j % page_size of page
// page_table[j / page_size], so every row has its own address. A thread copies one 16-byte column of
// kPasses rows. fetch() looks up the pages of a tile's rows and copy() issues the copies; a kernel that
// walks its tiles in order fetches tile n + 1 right after copying tile n, so the page-table loads (a
// dependent load before every copy) finish while tile n is computed instead of stalling the copies.
template <class Traits>
struct PagedTileRows {
  static constexpr int kChunksPerRow = Traits::kHeadDim / Traits::kGmemElemsPerVec;
  static_assert(Traits::kNLoadThreads % kChunksPerRow == 0, "a row's 16-byte chunks span whole threads");
  static constexpr int kRowsPerPass = Traits::kNLoadThreads / kChunksPerRow;
  static_assert(Traits::kBlockN % kRowsPerPass == 0, "the tile is a whole number of passes");
  static constexpr int kPasses = Traits::kBlockN / kRowsPerPass;

  int page[kPasses];  // of this thread's rows; -1 past the sequence (zero-filled, never looked up)
  int tile = 0;       // which tile the pages are for

  static __device__ __forceinline__ int row() { return threadIdx.x / kChunksPerRow; }

  template <class Params>
  __device__ __forceinline__ void fetch(Params const& p, int batch, int n, int seqlen_kv) {
    const int* pages = p.seq.page_table + int64_t(batch) * p.seq.page_table_stride;
    tile = n;
#pragma unroll
    for (int i = 0; i < kPasses; ++i) {
      const int j = n * Traits::kBlockN + row() + i * kRowsPerPass;
      page[i] = j < seqlen_kv ? pages[j / p.seq.page_size] : -1;
    }
  }

  // The fetched tile of `view` (K or V: the same rows) for kv head head_kv into dst (kBlockN, kHeadDim).
  template <class Params, class TensorS>
  __device__ __forceinline__ void copy(Params const& p, TensorView const& view, int head_kv, TensorS& dst) const {
    using Element = typename Traits::Element;
    const int col = (threadIdx.x % kChunksPerRow) * Traits::kGmemElemsPerVec;
    const Element* pool = static_cast<const Element*>(view.data);
    const Element* head = pool + int64_t(head_kv) * view.stride_head + col;
#pragma unroll
    for (int i = 0; i < kPasses; ++i) {
      const int r = row() + i * kRowsPerPass;
      const int in_page = (tile * Traits::kBlockN + r) % p.seq.page_size;
      const bool valid = page[i] >= 0;
      const Element* src = head + int64_t(page[i]) * view.stride_batch + int64_t(in_page) * view.stride_seq;
      cp_async_16_zfill(&dst(r, col), valid ? src : pool, valid);
    }
  }
};

// One K or V tile of a paged cache, each row looked up and copied in turn: for a kernel short of registers
// (the prefill kernel), which neither holds a tile's pages nor unrolls the rows.
template <class Traits, class Params, class TensorS>
__device__ __forceinline__ void load_paged_tile(Params const& p, TensorView const& view, int batch, int head_kv,
                                                int n, int seqlen_kv, TensorS& dst) {
  using Rows = PagedTileRows<Traits>;
  using Element = typename Traits::Element;
  const int* pages = p.seq.page_table + int64_t(batch) * p.seq.page_table_stride;
  const int col = (threadIdx.x % Rows::kChunksPerRow) * Traits::kGmemElemsPerVec;
  const Element* pool = static_cast<const Element*>(view.data);
  const Element* head = pool + int64_t(head_kv) * view.stride_head + col;
#pragma unroll 1
  for (int i = 0; i < Rows::kPasses; ++i) {
    const int r = Rows::row() + i * Rows::kRowsPerPass;
    const int j = n * Traits::kBlockN + r;
    const bool valid = j < seqlen_kv;
    const Element* src = valid ? head + int64_t(pages[j / p.seq.page_size]) * view.stride_batch +
                                     int64_t(j % p.seq.page_size) * view.stride_seq
                               : pool;
    cp_async_16_zfill(&dst(r, col), src, valid);
  }
}

}  // namespace sm80
}  // namespace sdpa
