// Split-KV (flash-decoding), arch-free: how many parts a problem's key range is cut into, and where the
// parts' partial results live in the caller's workspace.
//
// A decode block computes one tile of packed query rows (PackGQA: the rows of every query head that shares
// a kv head, so each K/V byte is read once per group) against one split of the key range and leaves one
// partial result per row: normalized O and its LSE, in fp32. The combine kernel merges the num_splits
// partials of each row into O and the LSE. Host-compilable.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/host_device.hpp"
#include "sdpa/problem.hpp"  // kSplitKvMaxSeqlenQ

namespace sdpa {

// The workspace of one split-KV launch: partial O (partials, B * Hkv, packed rows, D) then partial LSE
// (partials, B * Hkv, packed rows), fp32, every row contiguous. Packed row r of (b, kv head) is position
// r / group of query head kv_head * group + r % group.
struct SplitKvLayout {
  int partials = 0;     // the split count: one partial result per split and row
  int batch_heads = 0;  // B * Hkv
  int packed_rows = 0;  // group * Sq
  int head_dim = 0;

  SDPA_HOST_DEVICE int64_t rows() const { return int64_t(partials) * batch_heads * packed_rows; }
  // Index of (partial, b * Hkv + kv head, packed row) among rows().
  SDPA_HOST_DEVICE int64_t row(int partial, int batch_head, int packed_row) const {
    return (int64_t(partial) * batch_heads + batch_head) * packed_rows + packed_row;
  }
  std::size_t o_bytes() const { return static_cast<std::size_t>(rows()) * head_dim * sizeof(float); }
  std::size_t bytes() const { return o_bytes() + static_cast<std::size_t>(rows()) * sizeof(float); }
};

// How many parts to cut each block's key tiles into. `requested` > 0 is the caller's number (1: no split,
// results independent of how requests are batched), capped at one tile per part. Otherwise: as many
// blocks as fit the device's slots (SMs x resident blocks per SM) in one wave, never more (a second,
// nearly empty wave would double the time), while each part keeps at least kMinTilesPerSplit tiles, since
// a part pays a fixed cost (Q, pipeline fill, a partial write).
inline int choose_num_splits(int blocks, int kv_tiles, int slots, int requested) {
  constexpr int kMinTilesPerSplit = 4;
  constexpr int kMaxSplits = 128;
  if (kv_tiles <= 1) return 1;
  if (requested > 0) return requested < kv_tiles ? requested : kv_tiles;
  if (blocks <= 0 || blocks * 5 >= slots * 4) return 1;  // 80% of a wave is already there
  int splits = slots / blocks;
  const int by_tiles = kv_tiles / kMinTilesPerSplit;
  if (splits > by_tiles) splits = by_tiles;
  if (splits > kMaxSplits) splits = kMaxSplits;
  return splits < 1 ? 1 : splits;
}

}  // namespace sdpa
