// Split-KV decode kernel for sm80+ (mma.sync): one thread block computes 16 packed query rows (PackGQA)
// of one (batch, kv head) against one split of the key range, and leaves a partial result per row in the
// workspace for split_kv_combine_kernel.
//
// Warps split every key tile by columns (KernelTraitsDecodeSm80): warp w multiplies the 16 rows by its
// kWarpN keys of the tile, runs its own online softmax over them and accumulates its own O. So a warp is
// a split of its own and needs no other warp's data until the end, where the block merges its warps'
// results in smem into one partial per row; until then it shares only the K/V pipeline (kStages tiles in
// flight) and Q.
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>

#include "common/block_coord.hpp"
#include "common/params_decode.hpp"
#include "common/seq_info.hpp"
#include "common/score_mod_packed.cuh"
#include "common/split_combine.cuh"
#include "common/tile_range.hpp"
#include "sm80/gemm_sm80.cuh"
#include "sm80/kernel_traits_decode_sm80.cuh"
#include "sm80/paged_load_sm80.cuh"
#include "softmax.cuh"

namespace sdpa {
namespace sm80 {

// Q's packed rows into smem with 16-byte loads (each row has its own head and position, so no strided
// tiled copy describes them); rows past the last packed row are zeros. Q is read once per block.
template <class Traits, class Params, class TensorSQ>
__device__ __forceinline__ void load_packed_q(Params const& p, BlockCoord const& coord, SeqInfo const& seq, int row0,
                                              TensorSQ& sQ) {
  using Element = typename Traits::Element;
  constexpr int kVec = Traits::kGmemElemsPerVec;
  constexpr int kChunksPerRow = Traits::kHeadDim / kVec;
  const Element* q = static_cast<const Element*>(p.q.data);
  for (int c = threadIdx.x; c < Traits::kBlockM * kChunksPerRow; c += Traits::kNThreads) {
    const int r = c / kChunksPerRow;
    const int col = (c % kChunksPerRow) * kVec;
    const int packed = row0 + r;
    uint4 value = {0u, 0u, 0u, 0u};
    if (packed < coord.group * coord.seqlen_q) {
      const int64_t offset = seq.q_offset(p.q, coord.batch, coord.head_q(packed), coord.position(packed)) + col;
      value = *reinterpret_cast<const uint4*>(q + offset);
    }
    *reinterpret_cast<uint4*>(&sQ(r, col)) = value;
  }
}

// The block's partial result: the warps' results (each over its own key columns) merged through smem, which
// the K/V stages no longer need, into one normalized O and LSE per row, written to partial `split`; with a
// single split the partial is the final result, so it goes straight to O and the LSE and no combine runs.
// Weights as in the combine: w = exp(lse_w - max) / sum_w exp(lse_w - max). Each warp writes its weighted
// O to its own slice and the slices are summed in warp order, so the result is the same on every run.
template <class Traits, class Params, class TensorO, class TensorC, int kNRows>
__device__ __forceinline__ void store_partial(Params const& p, SeqInfo const& seq, BlockCoord const& coord, int split,
                                              int batch_head, int row0, int packed_rows, TensorO& acc_o_rc,
                                              TensorC const& coord_o, float (&lse)[kNRows], float* smem) {
  using namespace cute;
  constexpr int kBlockM = Traits::kBlockM, kHeadDim = Traits::kHeadDim, kNWarps = Traits::kNWarps;
  float* warp_lse = smem;                                  // (kNWarps, kBlockM)
  float* weighted = smem + kNWarps * kBlockM;              // (kNWarps, kBlockM, kHeadDim)
  const int warp = threadIdx.x / 32;
#pragma unroll
  for (int r = 0; r < kNRows; ++r) {
    if (get<1>(coord_o(r, 0)) == 0) warp_lse[warp * kBlockM + get<0>(coord_o(r, 0))] = lse[r];
  }
  __syncthreads();
  float block_lse[kNRows];
#pragma unroll
  for (int r = 0; r < kNRows; ++r) {
    const int row = get<0>(coord_o(r, 0));
    float m = -CUDART_INF_F;
#pragma unroll
    for (int w = 0; w < kNWarps; ++w) m = fmaxf(m, warp_lse[w * kBlockM + row]);
    float sum = 0.0f;
    if (m != -CUDART_INF_F) {
#pragma unroll
      for (int w = 0; w < kNWarps; ++w) sum += expf(warp_lse[w * kBlockM + row] - m);
    }
    const bool empty = sum == 0.0f;
    const float weight = empty ? 0.0f : expf(lse[r] - m) / sum;
    block_lse[r] = empty ? -CUDART_INF_F : m + logf(sum);
    float* dst = weighted + (warp * kBlockM + row) * kHeadDim;
#pragma unroll
    for (int k = 0; k < size<1>(acc_o_rc); k += 2) {
      // The 16x8 C fragment gives each lane two adjacent columns.
      *reinterpret_cast<float2*>(dst + get<1>(coord_o(r, k))) =
          make_float2(weight * acc_o_rc(r, k), weight * acc_o_rc(r, k + 1));
    }
  }
  __syncthreads();
  // Rows of the tile inside the problem, as float4s: one 16-byte store per thread per step.
  const int rows = min(kBlockM, packed_rows - row0);
  const bool final = p.layout.partials == 1;
  using Element = typename Traits::Element;
  Element* o = static_cast<Element*>(const_cast<void*>(p.o.data));
  for (int i = threadIdx.x; i < rows * kHeadDim / 4; i += Traits::kNThreads) {
    const int row = i / (kHeadDim / 4), col = (i % (kHeadDim / 4)) * 4;
    float4 total = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
    for (int w = 0; w < kNWarps; ++w) {
      const float4 v = *reinterpret_cast<const float4*>(weighted + (w * kBlockM + row) * kHeadDim + col);
      total.x += v.x;
      total.y += v.y;
      total.z += v.z;
      total.w += v.w;
    }
    if (final) {
      const int packed = row0 + row;
      Element* dst = o + seq.q_offset(p.o, coord.batch, coord.head_q(packed), coord.position(packed)) + col;
      alignas(8) Element four[4] = {Element(total.x), Element(total.y), Element(total.z), Element(total.w)};
      *reinterpret_cast<uint2*>(dst) = *reinterpret_cast<const uint2*>(four);  // rows are 16-byte aligned
    } else {
      *reinterpret_cast<float4*>(p.o_partial + p.layout.row(split, batch_head, row0 + row) * kHeadDim + col) = total;
    }
  }
  if (warp == 0) {
#pragma unroll
    for (int r = 0; r < kNRows; ++r) {
      const int packed = row0 + get<0>(coord_o(r, 0));
      if (get<1>(coord_o(r, 0)) != 0 || packed >= packed_rows) continue;
      if (!final) {
        p.lse_partial[p.layout.row(split, batch_head, packed)] = block_lse[r];
      } else if (p.lse != nullptr) {
        p.lse[seq.lse_index(coord.batch, coord.head_q(packed), coord.position(packed), p.heads_q, p.seqlen_q)] =
            block_lse[r];
      }
    }
  }
}

template <class Traits, class Bias>
__global__ void __launch_bounds__(Traits::kNThreads)
    flash_decode_kernel_sm80(const __grid_constant__ DecodeParams<typename Bias::Params> p) {
  using namespace cute;
  using Element = typename Traits::Element;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kWarpN = Traits::kWarpN;
  constexpr int kHeadDim = Traits::kHeadDim;
  constexpr int kStages = Traits::kStages;

  // Grid (B * Hkv, packed row blocks, splits): the large dimension on x, which has no 65535 limit.
  const int batch_head = blockIdx.x;
  const int m_block = blockIdx.y;
  const int split = blockIdx.z;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int head_kv = batch_head % p.heads_kv;
  const int batch = batch_head / p.heads_kv;
  const int row0 = m_block * kBlockM;
  // Lengths per sequence: a variable-length batch sizes the grid from its longest one.
  const SeqInfo seq = SeqInfo::of(p.seq, batch, p.seqlen_q, p.seqlen_kv);
  const int packed_rows = p.group_size * seq.seqlen_q;
  if (row0 >= packed_rows) return;  // the combine skips these rows too
  const BlockCoord coord{batch, head_kv, head_kv * p.group_size, p.group_size, seq.seqlen_q, seq.seqlen_kv};
  const TileRange range =
      Bias::kv_tiles(PositionSpan::of_packed_block(m_block, kBlockM, p.group_size, seq.seqlen_q), kBlockN,
                     seq.seqlen_q, seq.seqlen_kv)
          .split(split, p.layout.partials);

  extern __shared__ __align__(128) char smem[];
  Element* smem_q = reinterpret_cast<Element*>(smem);
  Element* smem_kv = smem_q + Traits::kSmemQElems;  // per stage: K then V
  auto k_stage = [&](int stage) { return smem_kv + stage * 2 * Traits::kSmemKVElems; };
  auto v_stage = [&](int stage) { return k_stage(stage) + Traits::kSmemKVElems; };
  Tensor sQ = make_tensor(make_smem_ptr(smem_q), typename Traits::SmemLayoutQ{});

  // K/V tiles through a kStages-deep cp.async pipeline; rows past the sequence end are zero-filled.
  const Element* k_ptr = static_cast<const Element*>(p.k.data);
  const Element* v_ptr = static_cast<const Element*>(p.v.data);
  Tensor gK = local_tile(head_matrix<kHeadDim>(k_ptr, seq.kv_offset(p.k, batch, head_kv), p.k.stride_seq,
                                               seq.seqlen_kv),
                         Shape<Int<kBlockN>, Int<kHeadDim>>{}, make_coord(_, 0));
  Tensor gV = local_tile(head_matrix<kHeadDim>(v_ptr, seq.kv_offset(p.v, batch, head_kv), p.v.stride_seq,
                                               seq.seqlen_kv),
                         Shape<Int<kBlockN>, Int<kHeadDim>>{}, make_coord(_, 0));
  typename Traits::GmemTiledCopyKV g2s;
  auto g2s_thr = g2s.get_thread_slice(threadIdx.x);
  Tensor tKgK = g2s_thr.partition_S(gK);
  Tensor tVgV = g2s_thr.partition_S(gV);
  Tensor tKVc = g2s_thr.partition_S(make_identity_tensor(Shape<Int<kBlockN>, Int<kHeadDim>>{}));
  // A paged cache: the pages of the next tile to load, fetched one tile ahead (tiles load in order).
  const bool paged = p.seq.page_table != nullptr;
  PagedTileRows<Traits> paged_rows;
  if (paged) paged_rows.fetch(p, batch, range.begin, seq.seqlen_kv);
  auto load_kv = [&](int n) {
    const int stage = n % kStages;
    if (paged) {
      Tensor sK = make_tensor(make_smem_ptr(k_stage(stage)), typename Traits::SmemLayoutKV{});
      Tensor sV = make_tensor(make_smem_ptr(v_stage(stage)), typename Traits::SmemLayoutKV{});
      paged_rows.copy(p, p.k, head_kv, sK);  // paged_rows holds tile n
      paged_rows.copy(p, p.v, head_kv, sV);
      if (n + 1 < range.end) paged_rows.fetch(p, batch, n + 1, seq.seqlen_kv);
      return;
    }
    Tensor tKsK = g2s_thr.partition_D(make_tensor(make_smem_ptr(k_stage(stage)), typename Traits::SmemLayoutKV{}));
    Tensor tVsV = g2s_thr.partition_D(make_tensor(make_smem_ptr(v_stage(stage)), typename Traits::SmemLayoutKV{}));
    const int rows_left = seq.seqlen_kv - n * kBlockN;
    if (rows_left >= kBlockN) {
      load_tile<true>(g2s, tKgK(_, _, _, n), tKsK, tKVc, rows_left);
      load_tile<true>(g2s, tVgV(_, _, _, n), tVsV, tKVc, rows_left);
    } else {
      load_tile<false>(g2s, tKgK(_, _, _, n), tKsK, tKVc, rows_left);
      load_tile<false>(g2s, tVgV(_, _, _, n), tVsV, tKVc, rows_left);
    }
  };
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    if (range.begin + i < range.end) load_kv(range.begin + i);
    cp_async_fence();  // one group per stage, empty or not, so the wait count below stays fixed
  }
  load_packed_q<Traits>(p, coord, seq, row0, sQ);

  typename Traits::WarpMma mma;
  auto thr_mma = mma.get_thread_slice(lane);
  Tensor acc_o = partition_fragment_C(mma, Shape<Int<kBlockM>, Int<kHeadDim>>{});
  clear(acc_o);
  Tensor acc_o_rc = acc_rowcol(acc_o);
  Tensor coord_rc = acc_rowcol(thr_mma.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kWarpN>>{})));
  constexpr int kNRows = decltype(size<0>(coord_rc))::value;
  OnlineSoftmax<kNRows> softmax;
  const PackedScoreMod<Bias, kNRows> score_mod(p, coord, coord_rc, row0);

  auto s2r_q = make_tiled_copy_A(typename Traits::SmemCopyAtom{}, mma);
  auto s2r_q_thr = s2r_q.get_thread_slice(lane);
  auto s2r_k = make_tiled_copy_B(typename Traits::SmemCopyAtom{}, mma);
  auto s2r_k_thr = s2r_k.get_thread_slice(lane);
  auto s2r_v = make_tiled_copy_B(typename Traits::SmemCopyAtomTransposed{}, mma);
  auto s2r_v_thr = s2r_v.get_thread_slice(lane);
  Tensor tSrQ = thr_mma.partition_fragment_A(sQ);
  Tensor tSsQ = s2r_q_thr.partition_S(sQ);
  using WarpKTile = Shape<Int<kWarpN>, Int<kHeadDim>>;
  using WarpVtTile = Shape<Int<kHeadDim>, Int<kWarpN>>;
  Tensor tSrK = thr_mma.partition_fragment_B(
      local_tile(make_tensor(make_smem_ptr(k_stage(0)), typename Traits::SmemLayoutKV{}), WarpKTile{},
                 make_coord(warp, 0)));
  Tensor tOrVt = thr_mma.partition_fragment_B(
      local_tile(make_tensor(make_smem_ptr(v_stage(0)), typename Traits::SmemLayoutVtNoSwizzle{}), WarpVtTile{},
                 make_coord(0, warp)));

  __syncthreads();  // Q is in smem
  if constexpr (Traits::kQInRegisters) copy(s2r_q, tSsQ, s2r_q_thr.retile_D(tSrQ));

  auto step = [&](int n, auto masked) {
    const int stage = n % kStages;
    Tensor sK = local_tile(make_tensor(make_smem_ptr(k_stage(stage)), typename Traits::SmemLayoutKV{}), WarpKTile{},
                           make_coord(warp, 0));
    Tensor sVt = local_tile(make_tensor(make_smem_ptr(v_stage(stage)), typename Traits::SmemLayoutVt{}),
                            WarpVtTile{}, make_coord(0, warp));
    Tensor acc_s = partition_fragment_C(mma, Shape<Int<kBlockM>, Int<kWarpN>>{});
    clear(acc_s);
    if constexpr (Traits::kQInRegisters) {
      gemm_rs(acc_s, tSrQ, tSrK, s2r_k_thr.partition_S(sK), mma, s2r_k, s2r_k_thr);
    } else {
      gemm_ss(acc_s, tSrQ, tSrK, tSsQ, s2r_k_thr.partition_S(sK), mma, s2r_q, s2r_q_thr, s2r_k, s2r_k_thr);
    }
    Tensor s = acc_rowcol(acc_s);
    score_mod.template apply<decltype(masked)::value, Element>(s, coord_rc, p, n * kBlockN + warp * kWarpN);
    softmax.update(s, acc_o_rc, p.softmax_c);
    Tensor rP = convert_fragment<Element>(acc_s);
    Tensor tOrP = make_tensor(rP.data(), acc_as_a_operand(rP.layout()));
    gemm_rs(acc_o, tOrP, tOrVt, s2r_v_thr.partition_S(sVt), mma, s2r_v, s2r_v_thr);
  };

  for (int n = range.begin; n < range.end; ++n) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // tile n has landed, and every warp is done with tile n - 1, whose stage is reloaded now
    if (n + kStages - 1 < range.end) load_kv(n + kStages - 1);
    cp_async_fence();
    if (range.needs_mask(n)) {
      step(n, cute::true_type{});
    } else {
      step(n, cute::false_type{});
    }
  }
  cp_async_wait<0>();
  allow_dependent_launch();

  float lse[kNRows];
  softmax.finalize(acc_o_rc, p.softmax_c, lse);
  Tensor coord_o = acc_rowcol(thr_mma.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{})));
  __syncthreads();  // every warp is done with the K/V stages, which the merge reuses
  store_partial<Traits>(p, seq, coord, split, batch_head, row0, packed_rows, acc_o_rc, coord_o, lse,
                        reinterpret_cast<float*>(smem_kv));
}

}  // namespace sm80
}  // namespace sdpa
