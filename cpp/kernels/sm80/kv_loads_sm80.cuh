// The K or V tiles of a forward block's sequence into one shared-memory buffer through cp.async, for the
// sm80 and sm90 forward mainloops (whose pipelines issue the loads): a tiled copy from the dense or packed
// layout, or row by row from a paged cache (kVarlen batches with a page table).
#pragma once

#include <cute/tensor.hpp>

#include "common/block_coord.hpp"
#include "common/seq_info.hpp"
#include "sm80/gemm_sm80.cuh"
#include "sm80/paged_load_sm80.cuh"

namespace sdpa {
namespace sm80 {

// load(n, full) copies key tile n of `view` (p.k or p.v) into `dst`; full (a bool_constant) says the tile
// lies wholly inside the sequence, which skips the row predicates. Rows past the sequence are zero-filled.
template <class Traits, bool kVarlen, class Params, class TensorS>
__device__ __forceinline__ auto kv_tile_loader(Params const& p, TensorView const& view, SeqInfo const& seq,
                                               BlockCoord const& coord, TensorS& dst) {
  using namespace cute;
  using Element = typename Traits::Element;
  constexpr int kBlockN = Traits::kBlockN, kHeadDim = Traits::kHeadDim;
  // Unused when paged (load_paged_tile finds each row's page).
  Tensor g = local_tile(head_matrix<kHeadDim>(static_cast<const Element*>(view.data),
                                              seq.kv_offset(view, coord.batch, coord.head_kv), view.stride_seq,
                                              coord.seqlen_kv),
                        Shape<Int<kBlockN>, Int<kHeadDim>>{}, make_coord(_, 0));
  typename Traits::GmemTiledCopyQKV g2s;
  auto g2s_thr = g2s.get_thread_slice(int(threadIdx.x));
  Tensor src = g2s_thr.partition_S(g);
  Tensor to = g2s_thr.partition_D(dst);
  Tensor rows = g2s_thr.partition_S(make_identity_tensor(Shape<Int<kBlockN>, Int<kHeadDim>>{}));
  const bool paged = kVarlen && p.seq.page_table != nullptr;
  return [=, &p, &view, &dst](int n, auto full) {
    if (paged) {
      load_paged_tile<Traits>(p, view, coord.batch, coord.head_kv, n, coord.seqlen_kv, dst);
    } else {
      load_tile<decltype(full)::value>(g2s, src(_, _, _, n), to, rows, coord.seqlen_kv - n * kBlockN);
    }
  };
}

}  // namespace sm80
}  // namespace sdpa
