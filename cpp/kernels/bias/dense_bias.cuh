// A bias the user materialized: a (B, H, Sq, Skv) tensor, broadcast through zero strides.
//
// Additive biases have the problem's element type and are added to the scaled scores. Boolean masks
// (one byte per element, nonzero = attend, as in PyTorch) add 0 where kept and -inf where removed.
#pragma once

#include <cstdint>
#include <cstring>

#include "sdpa/bias.hpp"
#include "sdpa/dtype.hpp"
#include "common/block_coord.hpp"

namespace sdpa {

struct DenseValues {
  static constexpr BiasKind kKind = BiasKind::kDense;
  static constexpr bool kSplittable = false;  // see AlibiSlopes::row_part
  static constexpr bool kHasValue = true;

  struct Params {
    const void* data = nullptr;
    bool is_mask = false;
    int64_t stride_batch = 0;
    int64_t stride_head = 0;
    int64_t stride_q = 0;
    int64_t stride_kv = 1;
    bool stageable = false;  // rows can be staged with 16-byte copies or TMA (see stage_tile, TileSource)
  };
  // Stageable: contiguous rows, 16-byte aligned, and strides a TMA descriptor can hold (whole 16-byte units,
  // non-negative, below 2^40 bytes); a zero stride broadcasts (TileSource).
  static Params make_params(const BiasDesc& bias) {
    const DenseDesc& d = bias.dense;
    const int64_t size = static_cast<int64_t>(dtype_size(d.dtype));
    auto fits = [&](int64_t stride) {
      return stride >= 0 && (stride * size) % 16 == 0 && stride * size < (int64_t(1) << 40);
    };
    const bool stageable = d.stride_kv == 1 && reinterpret_cast<std::uintptr_t>(d.data) % 16 == 0 &&
                           fits(d.stride_batch) && fits(d.stride_head) && fits(d.stride_q);
    return {d.data, d.is_mask(), d.stride_batch, d.stride_head, d.stride_q, d.stride_kv, stageable};
  }

  // The bias as a 4-d byte array for a TMA descriptor (kernels stage its tiles as raw bytes, whatever the
  // element type): dims (key byte, query row, head, batch), innermost first, with strides in bytes for dims
  // 1..3. A broadcast dim (stride 0) becomes extent 1, which kernels read at index 0: TMA wants positive
  // strides. Rows broadcast the same way, so a staged tile of a row-broadcast bias holds its one row at row 0
  // (staged_row).
  struct TileSource {
    const void* data;
    int element_bytes;  // 1 for a mask
    int64_t extent[4];
    int64_t stride_bytes[3];  // of dims 1, 2, 3
  };
  static TileSource tile_source(const Params& params, int element_bytes, int seqlen_q, int seqlen_kv, int heads,
                                int batch) {
    const int64_t size = params.is_mask ? 1 : element_bytes;
    auto dim = [](int extent, int64_t stride) { return stride == 0 || extent < 1 ? int64_t(1) : int64_t(extent); };
    // An extent-1 dim's stride is never multiplied by a nonzero index; 16 is a stride TMA accepts.
    auto stride = [size](int64_t s) { return s == 0 ? int64_t(16) : s * size; };
    return {params.data,
            static_cast<int>(size),
            {dim(seqlen_kv, 1) * size, dim(seqlen_q, params.stride_q), dim(heads, params.stride_head),
             dim(batch, params.stride_batch)},
            {stride(params.stride_q), stride(params.stride_head), stride(params.stride_batch)}};
  }

  const char* base = nullptr;  // the whole tensor, as bytes so one pointer serves both types
  bool is_mask = false;
  int64_t stride_q = 0;
  int64_t stride_kv = 1;
  int64_t slice_offset = 0;  // of this (batch, query head)'s slice, in elements

  DenseValues() = default;
  // The view for rows of query head head_q in the block at `coord`. Element-typed offsets are applied in
  // value(), where the element size is known.
  SDPA_HOST_DEVICE DenseValues(const Params& params, const BlockCoord& coord, int head_q)
      : base(static_cast<const char*>(params.data)),
        is_mask(params.is_mask),
        stride_q(params.stride_q),
        stride_kv(params.stride_kv),
        slice_offset(coord.batch * params.stride_batch + head_q * params.stride_head) {}

  template <class Element>
  SDPA_HOST_DEVICE float value(int i, int j) const {
    const int64_t index = slice_offset + i * stride_q + j * stride_kv;
    if (is_mask) {
      return base[index] ? 0.0f : -__builtin_huge_valf();
    }
    return static_cast<float>(reinterpret_cast<const Element*>(base)[index]);
  }

  // Shared-memory staging: a kernel may copy a (kRows x kCols) tile that lies inside the key range into
  // shared memory with 16-byte async copies (issued with its K tile) and read scores' values from there,
  // instead of one scattered 2-byte global load per score. Needs Params::stageable. Each staged row is
  // padded by 16 bytes so the eight rows a warp's MMA fragment touches fall in distinct banks.
  static constexpr bool kStagesTile = true;
  template <class Element, int kCols>
  static SDPA_HOST_DEVICE constexpr int staged_pitch() {
    return kCols * static_cast<int>(sizeof(Element)) + 16;  // a mask row (1 byte/elem) fits the same pitch
  }
  template <class Element, int kRows, int kCols>
  static SDPA_HOST_DEVICE constexpr int staged_tile_bytes() {
    return kRows * staged_pitch<Element, kCols>();
  }

#if defined(__CUDACC__)
  // Issues the async copies of the tile at (row0, col0); rows at or past seqlen_q are zero-filled. Every
  // row is read from this view's head, so a tile packing several heads (PackGQA) cannot stage.
  template <class Element, int kRows, int kCols, int kThreads>
  __device__ __forceinline__ void stage_tile(char* smem, int row0, int col0, int seqlen_q, int thread) const {
    if (is_mask) {
      stage_rows<1, kRows, kCols, kThreads, staged_pitch<Element, kCols>()>(smem, row0, col0, seqlen_q, thread);
    } else {
      stage_rows<sizeof(Element), kRows, kCols, kThreads, staged_pitch<Element, kCols>()>(smem, row0, col0,
                                                                                           seqlen_q, thread);
    }
  }

  // The value of element (r, c) of the staged tile.
  template <class Element, int kCols>
  __device__ __forceinline__ float staged_value(const char* smem, int r, int c) const {
    const char* row = smem + r * staged_pitch<Element, kCols>();
    if (is_mask) return row[c] ? 0.0f : -__builtin_huge_valf();
    return static_cast<float>(reinterpret_cast<const Element*>(row)[c]);
  }

  // Tiles staged as raw bytes (TileSource): the bytes per element, the row of the staged tile that holds
  // query row r of the tile (row 0 for every row of a row-broadcast bias), and the values of two adjacent
  // elements from their bits (kBytes: staged_bytes(), so that kernels branch on the mask once per tile).
  template <class Element>
  __device__ __forceinline__ int staged_bytes() const {
    return is_mask ? 1 : static_cast<int>(sizeof(Element));
  }
  __device__ __forceinline__ int staged_row(int r) const { return stride_q == 0 ? 0 : r; }
  template <class Element, int kBytes>
  __device__ __forceinline__ float2 staged_pair(uint32_t bits) const {
    if constexpr (kBytes == 1) {
      return {(bits & 0xffu) ? 0.0f : -__builtin_huge_valf(), (bits & 0xff00u) ? 0.0f : -__builtin_huge_valf()};
    } else {
      static_assert(kBytes == sizeof(Element), "a staged value is one Element");
      Element v[2];
      memcpy(v, &bits, sizeof(bits));
      return {static_cast<float>(v[0]), static_cast<float>(v[1])};
    }
  }

  template <int kSize, int kRows, int kCols, int kThreads, int kPitch>
  __device__ __forceinline__ void stage_rows(char* smem, int row0, int col0, int seqlen_q, int thread) const {
    constexpr int kChunksPerRow = kCols * kSize / 16;
    static_assert(kChunksPerRow * 16 == kCols * kSize, "a staged row is whole 16-byte chunks");
#pragma unroll
    for (int c = thread; c < kRows * kChunksPerRow; c += kThreads) {
      const int r = c / kChunksPerRow;
      const int chunk = c % kChunksPerRow;
      const bool inside = row0 + r < seqlen_q;
      const int64_t element = slice_offset + (inside ? row0 + r : 0) * stride_q + col0;
      const char* src = base + element * kSize + chunk * 16;
      const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem + r * kPitch + chunk * 16));
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(inside ? 16 : 0));
    }
  }
#endif
};

}  // namespace sdpa
