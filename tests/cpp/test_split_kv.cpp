// The split-KV decode family's host arithmetic: the split count libsdpa chooses, and the workspace layout
// its blocks and the combine agree on. Host-only (runs in CI); the kernels are tested on the GPU.
#include <gtest/gtest.h>

#include <set>

#include "bias/bias_trait.cuh"
#include "common/split_kv.hpp"

namespace {

using sdpa::choose_num_splits;
using sdpa::SplitKvLayout;

TEST(SplitCount, RequestedCountIsKeptUpToOneTilePerPart) {
  EXPECT_EQ(choose_num_splits(64, 100, 264, 1), 1);
  EXPECT_EQ(choose_num_splits(64, 100, 264, 7), 7);
  EXPECT_EQ(choose_num_splits(64, 100, 264, 1000), 100);
  EXPECT_EQ(choose_num_splits(1, 1, 264, 5), 1);  // one tile cannot be cut
}

TEST(SplitCount, FullGridNeedsNoSplit) {
  EXPECT_EQ(choose_num_splits(512, 32, 264, 0), 1);  // B=64, Hkv=8: more blocks than slots
  EXPECT_EQ(choose_num_splits(212, 32, 264, 0), 1);  // 80% of one wave
}

TEST(SplitCount, FillsOneWaveWithAtLeastFourTilesPerPart) {
  // B=1, Hkv=8, Skv=32k in 64-key tiles: 8 blocks, 512 tiles -> 33 parts fill 264 slots.
  EXPECT_EQ(choose_num_splits(8, 512, 264, 0), 33);
  // B=8, Hkv=8, Skv=8k: 64 blocks, 128 tiles -> 4 parts, one wave (5 would start a second one).
  EXPECT_EQ(choose_num_splits(64, 128, 264, 0), 4);
  // Few tiles: parts keep >= 4 tiles each.
  EXPECT_EQ(choose_num_splits(8, 12, 264, 0), 3);
  EXPECT_EQ(choose_num_splits(8, 3, 264, 0), 1);
  // A huge key range on one block is capped.
  EXPECT_EQ(choose_num_splits(1, 100000, 264, 0), 128);
}

TEST(SplitKvLayout, EveryPartialRowHasItsOwnSlot) {
  const SplitKvLayout layout{6, 5, 7, 128};
  std::set<long long> seen;
  for (int part = 0; part < layout.partials; ++part) {
    for (int bh = 0; bh < layout.batch_heads; ++bh) {
      for (int row = 0; row < layout.packed_rows; ++row) {
        const long long index = layout.row(part, bh, row);
        EXPECT_GE(index, 0);
        EXPECT_LT(index, layout.rows());
        seen.insert(index);
      }
    }
  }
  EXPECT_EQ(static_cast<long long>(seen.size()), layout.rows());
  EXPECT_EQ(layout.bytes(), static_cast<std::size_t>(layout.rows()) * (128 + 1) * sizeof(float));
}

// The decode kernel's key range per packed block: the union of the positions' ranges, split without
// losing or repeating a tile.
TEST(SplitKvRanges, PackedDecodeBlockSplitsCoverItsTiles) {
  using Bias = sdpa::CausalLowerRight;
  const int group = 4, seqlen_q = 3, seqlen_kv = 1000, block_n = 64;
  const sdpa::PositionSpan span = sdpa::PositionSpan::of_packed_block(0, 16, group, seqlen_q);
  EXPECT_EQ(span.first, 0);
  EXPECT_EQ(span.last, 2);  // 12 packed rows: positions 0..2
  const sdpa::TileRange all = Bias::kv_tiles(span, block_n, seqlen_q, seqlen_kv);
  EXPECT_EQ(all.end, 16);                 // keys up to 2 + 997 = 999: all 16 tiles
  EXPECT_EQ(all.unmasked_end, 15);        // the partial last tile and the diagonal need the mask
  for (int splits : {1, 3, 16}) {
    int covered = 0;
    for (int s = 0; s < splits; ++s) {
      const sdpa::TileRange part = all.split(s, splits);
      EXPECT_EQ(part.begin, all.begin + covered);
      covered += part.end - part.begin;
    }
    EXPECT_EQ(covered, all.end - all.begin);
  }
}

}  // namespace
