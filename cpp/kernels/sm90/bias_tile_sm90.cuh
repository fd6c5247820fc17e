// The sm90 forward's staged bias tile: a trait that stages tiles (DenseValues) has each (kRows x kCols) tile of
// its bias brought by TMA into a two-stage shared-memory pipeline, one key tile ahead of the consumers.
//
// The tile travels as raw bytes (the trait's TileSource: an fp16/bf16 bias or a one-byte mask alike), in boxes
// of kRows rows x 128 bytes with the 128-byte swizzle: a value tile of 128 keys is two boxes, a mask tile one.
// Without the swizzle the eight rows a warp's accumulator fragment touches would share banks; with it a
// thread's address is its row's base XOR a per-thread constant, one integer op per 16-byte chunk. The
// hardware zero-fills rows and keys past the ends (those scores are masked or never stored), and the
// consumers release a stage as soon as they have added its values, so the next tile's copy overlaps the
// GEMMs and the softmax of this one.
#pragma once

#include <cstdint>
#include <string>

#include <cuda.h>
#include <cute/arch/copy_sm90_desc.hpp>
#include <cute/arch/copy_sm90_tma.hpp>
#include <cutlass/cuda_host_adapter.hpp>

#include "common/host_device.hpp"
#include "sdpa/status.hpp"

namespace sdpa {
namespace sm90 {

template <int kRows, int kCols>
struct BiasTileSm90 {
  static constexpr int kBoxWidth = 128;  // bytes: the swizzle's span
  static constexpr int kBoxBytes = kRows * kBoxWidth;
  static constexpr int kMaxBoxes = (kCols * 2 + kBoxWidth - 1) / kBoxWidth;  // 2-byte values; a mask needs fewer
  static constexpr int kStages = 2;
  static constexpr int kStageBytes = kMaxBoxes * kBoxBytes;
  static constexpr int kSmemBytes = kStages * kStageBytes;
  static_assert(kBoxBytes % 1024 == 0, "each box keeps the 1024-byte alignment of the swizzle pattern");

  // Host-built, in the kernel's parameter space (__grid_constant__), as TMA wants.
  struct Tma {
    cute::TmaDescriptor desc;
    int32_t rows_extent, heads_extent, batch_extent;  // 1 where the bias broadcasts (read at index 0)
    int32_t element_bytes;                            // 1 for a mask
    int32_t boxes;  // per tile: kCols x element_bytes in whole boxes (kept: derived in the kernel, it spilled)
    SDPA_HOST_DEVICE uint32_t tile_bytes() const { return uint32_t(boxes) * kBoxBytes; }
  };

  // Host: the descriptor of `source` (a trait's TileSource, whose strides the trait checked: 16-byte units
  // below 2^40 bytes, so the encoding cannot fail on them).
  template <class TileSource>
  static Status make(const TileSource& source, Tma& tma) {
    cuuint64_t dims[4], strides[3];
    for (int d = 0; d < 4; ++d) dims[d] = static_cast<cuuint64_t>(source.extent[d]);
    for (int d = 0; d < 3; ++d) strides[d] = static_cast<cuuint64_t>(source.stride_bytes[d]);
    cuuint32_t box[4] = {kBoxWidth, kRows, 1, 1};
    cuuint32_t element_strides[4] = {1, 1, 1, 1};
    const CUresult result = CUTLASS_CUDA_DRIVER_WRAPPER_CALL(cuTensorMapEncodeTiled)(
        reinterpret_cast<CUtensorMap*>(&tma.desc), CU_TENSOR_MAP_DATA_TYPE_UINT8, 4, const_cast<void*>(source.data),
        dims, strides, box, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
        CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (result != CUDA_SUCCESS) {
      return Status::error(StatusCode::kUnsupported,
                           "fwd_sm90: the bias cannot be described to TMA (cuTensorMapEncodeTiled error " +
                               std::to_string(int(result)) + ")");
    }
    tma.rows_extent = static_cast<int32_t>(source.extent[1]);
    tma.heads_extent = static_cast<int32_t>(source.extent[2]);
    tma.batch_extent = static_cast<int32_t>(source.extent[3]);
    tma.element_bytes = source.element_bytes;
    tma.boxes = (kCols * source.element_bytes + kBoxWidth - 1) / kBoxWidth;
    return Status::success();
  }

#if defined(__CUDACC__)
  // Producer, one thread: the copies of the tile at (row0, key col0) of (head, batch) into `stage`, completing
  // on `barrier` (armed with tile_bytes()).
  static __device__ __forceinline__ void load(Tma const& tma, uint64_t* barrier, char* stage, int row0, int col0,
                                              int head, int batch) {
    const int32_t row = tma.rows_extent > 1 ? row0 : 0;
    const int32_t h = tma.heads_extent > 1 ? head : 0;
    const int32_t b = tma.batch_extent > 1 ? batch : 0;
    const int32_t col_byte = col0 * tma.element_bytes;
    for (int box = 0; box < tma.boxes; ++box) {
      cute::SM90_TMA_LOAD_4D::copy(&tma.desc, barrier, static_cast<uint64_t>(cute::TMA::CacheHintSm90::EVICT_NORMAL),
                                   stage + box * kBoxBytes, col_byte + box * kBoxWidth, row, h, b);
    }
  }

  // Consumers read a staged tile row by row. A thread's columns of a row are its first column (below 16 bytes
  // into a 16-byte chunk: thread_byte) plus compile-time offsets whose low four bits leave it inside that
  // chunk, as in every MMA accumulator fragment. With the 128-byte swizzle (a row's chunk c sits at chunk
  // c XOR (r mod 8)) the address is then the row's base plus (offset XOR key): one integer op per offset,
  // and none per row beyond the first.
  struct Row {
    uint32_t base;  // shared-memory address of the row's first byte, plus thread_byte
    uint32_t key;   // (r mod 8) x 16
  };
  static __device__ __forceinline__ Row row(uint32_t stage, int r, int thread_byte) {
    return {stage + uint32_t(r * kBoxWidth + thread_byte), uint32_t(r & 7) << 4};
  }
  // The 2 x kBytes bytes at `offset` past the thread's first byte of the row (two adjacent elements).
  template <int kBytes>
  static __device__ __forceinline__ uint32_t load_pair(Row const& row, int offset) {
    const uint32_t address =
        row.base + uint32_t((offset / kBoxWidth) * kBoxBytes) + (uint32_t(offset % kBoxWidth) ^ row.key);
    uint32_t bits;
    if constexpr (kBytes == 1) {
      uint16_t half;
      asm volatile("ld.shared.u16 %0, [%1];\n" : "=h"(half) : "r"(address));
      bits = half;
    } else {
      static_assert(kBytes == 2, "elements of one or two bytes");
      asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(bits) : "r"(address));
    }
    return bits;
  }
#endif
};

}  // namespace sm90
}  // namespace sdpa
