// The persistent forward's tile order (common/tile_scheduler.hpp), host-side: every tile is visited exactly
// once, sections of (head, batch) pairs fit half the L2, and a section runs its longest causal tiles first.
#include <gtest/gtest.h>

#include <set>
#include <tuple>

#include "common/tile_scheduler.hpp"

namespace {

using sdpa::FwdTile;
using sdpa::PersistentTileSchedulerFwd;

std::tuple<int, int, int> key(const FwdTile& t) { return {t.m_block, t.head_q, t.batch}; }

TEST(PersistentTileScheduler, VisitsEveryTileOnce) {
  for (double kv_bytes : {0.0, 1e6, 8e6, 1e9})  // sections of every pair, several, one pair
  for (bool batch_fastest : {false, true}) {
    const auto s = PersistentTileSchedulerFwd::make(1000, 128, 6, 3, kv_bytes, 50e6, 18, batch_fastest);
    EXPECT_EQ(s.num_tiles, 8 * 6 * 3);
    std::set<std::tuple<int, int, int>> seen;
    for (int t = 0; t < s.num_tiles; ++t) {
      const FwdTile tile = PersistentTileSchedulerFwd::tile(s, t);
      EXPECT_GE(tile.m_block, 0);
      EXPECT_LT(tile.m_block, 8);
      EXPECT_GE(tile.head_q, 0);
      EXPECT_LT(tile.head_q, 6);
      EXPECT_GE(tile.batch, 0);
      EXPECT_LT(tile.batch, 3);
      seen.insert(key(tile));
    }
    EXPECT_EQ(static_cast<int>(seen.size()), s.num_tiles) << kv_bytes << " " << batch_fastest;
  }
}

// A dense bias's launch: sections of one head's batch elements, batch fastest, so neighbouring tiles share
// the (1, H, Sq, Skv) bias tile.
TEST(PersistentTileScheduler, BatchFastestSectionsHoldOneHead) {
  const auto s = PersistentTileSchedulerFwd::make(4096, 128, 16, 4, 2e6, 50e6, 4, true);
  EXPECT_EQ(s.pairs_per_section, 4);
  for (int t = 0; t < s.num_tiles; ++t) {
    const FwdTile tile = PersistentTileSchedulerFwd::tile(s, t);
    EXPECT_EQ(tile.batch, t % 4) << t;
    EXPECT_EQ(tile.head_q, t / (32 * 4)) << t;
    EXPECT_EQ(tile.m_block, 31 - (t % (32 * 4)) / 4) << t;
  }
}

TEST(PersistentTileScheduler, SectionsFitHalfTheL2AndRunLongestFirst) {
  // 8 MB of K/V per query head, 50 MB of L2: sections of 3 pairs (the last of 18 pairs is full too).
  const auto s = PersistentTileSchedulerFwd::make(4096, 128, 6, 3, 8e6, 50e6, 18);
  EXPECT_EQ(s.pairs_per_section, 3);
  for (int t = 0; t < s.num_tiles; ++t) {
    const FwdTile tile = PersistentTileSchedulerFwd::tile(s, t);
    const int pair = tile.batch * 6 + tile.head_q;          // query head fastest
    EXPECT_EQ(pair / 3, t / (32 * 3)) << t;                 // the section's pairs only
    EXPECT_EQ(tile.m_block, 31 - (t % (32 * 3)) / 3) << t;  // query blocks from the last one down
  }
  // A last, shorter section: 7 pairs in sections of 3 -> 3, 3, 1.
  const auto odd = PersistentTileSchedulerFwd::make(256, 128, 7, 1, 8e6, 50e6, 18);
  EXPECT_EQ(PersistentTileSchedulerFwd::tile(odd, odd.num_tiles - 1).head_q, 6);
  EXPECT_EQ(PersistentTileSchedulerFwd::tile(odd, odd.num_tiles - 2).head_q, 6);
  EXPECT_EQ(PersistentTileSchedulerFwd::tile(odd, odd.num_tiles - 2).m_block, 1);
}

TEST(PersistentTileScheduler, SectionsHoldAtMostTheirCap) {
  // Causal launches take sections of two pairs, others of one; half the L2 still caps them.
  EXPECT_EQ(PersistentTileSchedulerFwd::make(8192, 128, 16, 2, 4e6, 50e6, 2).pairs_per_section, 2);
  EXPECT_EQ(PersistentTileSchedulerFwd::make(8192, 128, 16, 2, 4e6, 50e6, 1).pairs_per_section, 1);
  EXPECT_EQ(PersistentTileSchedulerFwd::make(32768, 128, 16, 1, 16e6, 50e6, 2).pairs_per_section, 1);
  EXPECT_EQ(PersistentTileSchedulerFwd::make(128, 128, 1, 1, 4e6, 50e6, 2).pairs_per_section, 1);  // one pair
  const auto s = PersistentTileSchedulerFwd::make(8192, 128, 16, 2, 4e6, 50e6, 2);
  EXPECT_EQ(s.counter, nullptr);
  EXPECT_EQ(s.num_tiles, 64 * 32);
}

}  // namespace
