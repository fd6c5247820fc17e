// What a bias tells a kernel about tiles: the span of positions one tile covers, and the range of tiles
// along the other dimension that the tile visits, with the sub-range that needs no element masking.
#pragma once

#include "common/host_device.hpp"

namespace sdpa {

// Positions [first, last] (inclusive, inside the sequence) that the rows (or columns) of one tile cover.
// A bias's tile ranges depend on nothing else, so a plain block, a decode tile, a packed GQA block (rows
// of several heads at the same positions) and a split all ask the same question.
struct PositionSpan {
  int first = 0;
  int last = -1;

  // Block `block` of `block_size` positions, cut at the sequence end.
  static SDPA_HOST_DEVICE PositionSpan of_block(int block, int block_size, int seqlen) {
    const int first = block * block_size;
    return {first, (seqlen < first + block_size ? seqlen : first + block_size) - 1};
  }
  // Block `block` of `block_size` packed rows, where packed row r is position r / group of one of `group`
  // query heads (PackGQA): the block covers positions first_row / group .. last_row / group.
  static SDPA_HOST_DEVICE PositionSpan of_packed_block(int block, int block_size, int group, int seqlen) {
    const PositionSpan rows = of_block(block, block_size, seqlen * group);
    return {rows.first / group, rows.last / group};
  }
};

// The tiles one block visits along the dimension it iterates over, [begin, end), and the contiguous
// sub-range [unmasked_begin, unmasked_end) whose tiles need no element masking at all: every element of
// such a tile is inside the sequence and kept by the bias's mask. Tiles outside [begin, end) are fully
// masked and are never loaded.
struct TileRange {
  int begin = 0;
  int end = 0;
  int unmasked_begin = 0;
  int unmasked_end = 0;

  SDPA_HOST_DEVICE bool empty() const { return begin >= end; }
  SDPA_HOST_DEVICE bool needs_mask(int tile) const {
    return tile < unmasked_begin || tile >= unmasked_end;
  }

  // Part `split` of `num_splits` contiguous, near-equal parts (split-KV). The parts cover [begin, end)
  // exactly once, and each keeps the unmasked tiles it holds: masking is a property of the tile.
  SDPA_HOST_DEVICE TileRange split(int split, int num_splits) const {
    const int count = end - begin;
    TileRange part;
    part.begin = begin + static_cast<int>(static_cast<long long>(count) * split / num_splits);
    part.end = begin + static_cast<int>(static_cast<long long>(count) * (split + 1) / num_splits);
    part.unmasked_begin = clamp_int(unmasked_begin, part.begin, part.end);
    part.unmasked_end = clamp_int(unmasked_end, part.unmasked_begin, part.end);
    return part;
  }
};

}  // namespace sdpa
