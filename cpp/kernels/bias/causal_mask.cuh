// The causal part of every bias: which (query i, key j) pairs are kept, and what that means per tile.
//
// Upper-left keeps j <= i; lower-right keeps j <= i + (Skv - Sq), aligning the last query with the last
// key (the decoding convention). Drawn for Sq = 3, Skv = 4 (1 = attend):
//
//   UpperLeft    LowerRight    None
//   1 0 0 0      1 1 0 0       1 1 1 1
//   1 1 0 0      1 1 1 0       1 1 1 1
//   1 1 1 0      1 1 1 1       1 1 1 1
//
// With Sq > Skv, lower-right masks whole rows at the top: those rows attend to nothing and their output
// is zero.
#pragma once

#include "sdpa/bias.hpp"
#include "common/tile_range.hpp"

namespace sdpa {

template <CausalVariant kVariant>
struct CausalMask {
  static constexpr CausalVariant kCausal = kVariant;
  static constexpr bool kIsCausal = kVariant != CausalVariant::kNone;

  // Key j is kept for query i iff j <= i + diagonal_offset.
  static SDPA_HOST_DEVICE int diagonal_offset(int seqlen_q, int seqlen_kv) {
    return kVariant == CausalVariant::kLowerRight ? seqlen_kv - seqlen_q : 0;
  }

  int offset = 0;

  CausalMask() = default;
  SDPA_HOST_DEVICE CausalMask(int seqlen_q, int seqlen_kv)
      : offset(diagonal_offset(seqlen_q, seqlen_kv)) {}

  SDPA_HOST_DEVICE bool masked(int i, int j) const { return kIsCausal && j > i + offset; }

  // Forward pass: the key tiles that query positions rows.first..rows.last visit. A tile needs no masking
  // when, for every one of those rows, all block_n keys of the tile exist and are kept.
  static SDPA_HOST_DEVICE TileRange kv_tiles(PositionSpan rows, int block_n, int seqlen_q, int seqlen_kv) {
    const int offset = diagonal_offset(seqlen_q, seqlen_kv);
    const int num_kv_tiles = ceil_div(seqlen_kv, block_n);
    const int row_first = rows.first;
    const int row_last = rows.last;
    TileRange range;
    range.begin = 0;
    range.end = kIsCausal ? clamp_int(floor_div(row_last + offset, block_n) + 1, 0, num_kv_tiles)
                          : num_kv_tiles;
    int full = seqlen_kv / block_n;  // tiles with no key past the sequence end
    if (kIsCausal) {
      const int causal_full = floor_div(row_first + offset + 1, block_n);
      full = causal_full < full ? causal_full : full;
    }
    range.unmasked_begin = range.begin;
    range.unmasked_end = clamp_int(full, range.begin, range.end);
    return range;
  }

  // Backward pass (transposed): the query tiles that visit key positions cols.first..cols.last. A tile
  // needs no masking when, for every one of those columns, all block_m queries exist and keep it.
  static SDPA_HOST_DEVICE TileRange q_tiles(PositionSpan cols, int block_m, int seqlen_q, int seqlen_kv) {
    const int offset = diagonal_offset(seqlen_q, seqlen_kv);
    const int num_q_tiles = ceil_div(seqlen_q, block_m);
    const int col_first = cols.first;
    const int col_last = cols.last;
    TileRange range;
    range.end = num_q_tiles;
    // The first query keeping column col_first is col_first - offset; when that is past the sequence end
    // (upper-left with Sq < Skv), no query of any tile sees this key block and the range is empty.
    const int first_row = col_first - offset;
    range.begin = !kIsCausal               ? 0
                  : first_row >= seqlen_q ? num_q_tiles
                                          : clamp_int(floor_div(first_row, block_m), 0, num_q_tiles);
    const int first_full = kIsCausal ? ceil_div(col_last - offset, block_m) : range.begin;
    const int full_end = seqlen_q / block_m;  // tiles with no query past the sequence end
    range.unmasked_begin = clamp_int(first_full, range.begin, range.end);
    range.unmasked_end = clamp_int(full_end, range.unmasked_begin, range.end);
    return range;
  }
};

}  // namespace sdpa
