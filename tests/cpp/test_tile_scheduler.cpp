// The persistent forward's tile order (common/tile_scheduler.hpp), host-side: every tile is dealt exactly
// once, longest causal tiles first, and the blocks' sums of tile lengths come out even.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <tuple>
#include <vector>

#include "common/tile_scheduler.hpp"

namespace {

using sdpa::FwdTile;
using sdpa::PersistentTileSchedulerFwd;

std::tuple<int, int, int> key(const FwdTile& t) { return {t.m_block, t.head_q, t.batch}; }

// The tiles block `block` of `blocks` computes, in its order (the kernel's for_each_tile).
std::vector<FwdTile> dealt_to(const PersistentTileSchedulerFwd::Params& s, int block, int blocks) {
  std::vector<FwdTile> tiles;
  for (int round = 0; round * blocks < s.num_tiles; ++round) {
    const int t = PersistentTileSchedulerFwd::dealt(round, block, blocks);
    if (t < s.num_tiles) tiles.push_back(PersistentTileSchedulerFwd::tile(s, t));
  }
  return tiles;
}

TEST(PersistentTileScheduler, DealsEveryTileOnce) {
  for (bool batch_fastest : {false, true}) {
    for (int blocks : {1, 7, 132, 500}) {
      const auto s = PersistentTileSchedulerFwd::make(1000, 128, 6, 3, batch_fastest);
      ASSERT_EQ(s.num_tiles, 8 * 6 * 3);
      std::set<std::tuple<int, int, int>> seen;
      for (int b = 0; b < std::min(blocks, s.num_tiles); ++b) {
        for (const FwdTile& tile : dealt_to(s, b, blocks)) {
          EXPECT_TRUE(tile.m_block >= 0 && tile.m_block < 8 && tile.head_q >= 0 && tile.head_q < 6 &&
                      tile.batch >= 0 && tile.batch < 3);
          EXPECT_TRUE(seen.insert(key(tile)).second) << "dealt twice";
        }
      }
      EXPECT_EQ(static_cast<int>(seen.size()), s.num_tiles) << blocks;
    }
  }
}

TEST(PersistentTileScheduler, LongestFirstAndEvenSums) {
  // S = 8k, 128-row blocks, 16 heads, batch 2, 132 blocks: causal work of tile m is m + 1 key tiles.
  const auto s = PersistentTileSchedulerFwd::make(8192, 128, 16, 2, false);
  EXPECT_EQ(PersistentTileSchedulerFwd::tile(s, 0).m_block, 63);
  EXPECT_EQ(PersistentTileSchedulerFwd::tile(s, s.num_tiles - 1).m_block, 0);
  EXPECT_EQ(key(PersistentTileSchedulerFwd::tile(s, 1)), std::make_tuple(63, 1, 0));  // query head fastest
  int most = 0, least = 1 << 30, total = 0;
  for (int b = 0; b < 132; ++b) {
    int sum = 0;
    for (const FwdTile& tile : dealt_to(s, b, 132)) sum += tile.m_block + 1;
    most = std::max(most, sum);
    least = std::min(least, sum);
    total += sum;
  }
  EXPECT_EQ(total, 32 * 64 * 65 / 2);
  EXPECT_LE(most, total / 132 + 64) << "no block more than one long tile above the mean";
  EXPECT_LE(most - least, 64);
}

TEST(PersistentTileScheduler, BatchFastestNumbersPairsByBatch) {
  const auto s = PersistentTileSchedulerFwd::make(128, 128, 4, 2, true);
  EXPECT_EQ(key(PersistentTileSchedulerFwd::tile(s, 0)), std::make_tuple(0, 0, 0));
  EXPECT_EQ(key(PersistentTileSchedulerFwd::tile(s, 1)), std::make_tuple(0, 0, 1));
  EXPECT_EQ(key(PersistentTileSchedulerFwd::tile(s, 2)), std::make_tuple(0, 1, 0));
}

}  // namespace
