// The bias traits' tile ranges against a brute-force look at every element of every tile, on the host:
// query blocks and key blocks (both directions), arbitrary position spans (decode tiles), packed GQA
// blocks and split-KV parts. The tests hold whatever closed form the traits use.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "bias/bias_trait.cuh"

namespace {

using sdpa::BlockCoord;
using sdpa::CausalVariant;
using sdpa::PositionSpan;
using sdpa::TileRange;

// The spec of the causal variants (sdpa/bias.hpp), written out.
bool spec_kept(CausalVariant causal, int i, int j, int seqlen_q, int seqlen_kv) {
  if (causal == CausalVariant::kUpperLeft) return j <= i;
  if (causal == CausalVariant::kLowerRight) return j <= i + (seqlen_kv - seqlen_q);
  return true;
}

// ---- tile ranges -----------------------------------------------------------------------------------

// What a brute-force scan of one tile finds: some element visible, every element visible.
struct TileScan {
  bool any = false;
  bool all = true;
};

// Forward: query block m_block (rows past seqlen_q ignored) against key tile n. "all" needs every key of
// the tile to exist and be kept for every in-sequence row.
TileScan scan_kv_tile(CausalVariant causal, int m_block, int n, int block_m, int block_n, int sq, int skv) {
  TileScan scan;
  for (int i = m_block * block_m; i < (m_block + 1) * block_m && i < sq; ++i) {
    for (int j = n * block_n; j < (n + 1) * block_n; ++j) {
      const bool visible = j < skv && spec_kept(causal, i, j, sq, skv);
      scan.any = scan.any || visible;
      scan.all = scan.all && visible;
      if (scan.any && !scan.all) return scan;
    }
  }
  return scan;
}

// Backward: key block n_block (columns past seqlen_kv ignored) against query tile m. "all" needs every
// query of the tile to exist and keep every in-sequence column.
TileScan scan_q_tile(CausalVariant causal, int n_block, int m, int block_m, int block_n, int sq, int skv) {
  TileScan scan;
  for (int j = n_block * block_n; j < (n_block + 1) * block_n && j < skv; ++j) {
    for (int i = m * block_m; i < (m + 1) * block_m; ++i) {
      const bool visible = i < sq && spec_kept(causal, i, j, sq, skv);
      scan.any = scan.any || visible;
      scan.all = scan.all && visible;
      if (scan.any && !scan.all) return scan;
    }
  }
  return scan;
}

std::string describe(const char* what, CausalVariant causal, int block, int sq, int skv, int block_m, int block_n,
                     const TileRange& r) {
  return std::string(what) + " causal=" + sdpa::causal_variant_name(causal) + " block=" + std::to_string(block) +
         " Sq=" + std::to_string(sq) + " Skv=" + std::to_string(skv) + " block_m=" + std::to_string(block_m) +
         " block_n=" + std::to_string(block_n) + " -> [" + std::to_string(r.begin) + ", " + std::to_string(r.end) +
         ") unmasked [" + std::to_string(r.unmasked_begin) + ", " + std::to_string(r.unmasked_end) + ")";
}

// The properties every range must have, given a scan of each of its num_tiles tiles.
template <class Scan>
void check_range(const TileRange& r, int num_tiles, Scan scan, const std::string& where, int& failures) {
  auto fail = [&](const std::string& why) {
    if (++failures <= 10) ADD_FAILURE() << where << ": " << why;
  };
  if (!(0 <= r.begin && r.begin <= r.end && r.end <= num_tiles)) return fail("range outside [0, num_tiles]");
  if (!(r.begin <= r.unmasked_begin && r.unmasked_begin <= r.unmasked_end && r.unmasked_end <= r.end)) {
    return fail("unmasked range not inside [begin, end)");
  }
  for (int t = 0; t < num_tiles; ++t) {
    const TileScan s = scan(t);
    const bool visited = r.begin <= t && t < r.end;
    if (!visited && s.any) fail("tile " + std::to_string(t) + " is skipped but has a visible element");
    if (visited && !r.needs_mask(t) && !s.all) fail("tile " + std::to_string(t) + " is unmasked but not fully visible");
    if (visited && r.needs_mask(t) && s.all) fail("tile " + std::to_string(t) + " is fully visible but masked (slow path)");
    if (visited && r.needs_mask(t) == (r.unmasked_begin <= t && t < r.unmasked_end)) {
      fail("needs_mask(" + std::to_string(t) + ") disagrees with [unmasked_begin, unmasked_end)");
    }
  }
  if (!r.empty() && !scan(r.begin).any) fail("first visited tile has no visible element");
  if (!r.empty() && !scan(r.end - 1).any) fail("last visited tile has no visible element");
}

const std::vector<int> kTileSizes = {1, 2, 15, 16, 17, 31, 33, 63, 64, 65, 100, 113, 127, 129, 255, 257, 1000};
const std::vector<int> kBlocks = {16, 32, 64, 128};

template <class Trait>
void check_tile_ranges(CausalVariant causal) {
  int failures = 0;
  for (int sq : kTileSizes) {
    for (int skv : kTileSizes) {
      for (int block_m : kBlocks) {
        for (int block_n : kBlocks) {
          const int num_q = (sq + block_m - 1) / block_m, num_kv = (skv + block_n - 1) / block_n;
          for (int m = 0; m < num_q; ++m) {
            const TileRange r = Trait::kv_tiles(m, block_m, block_n, sq, skv);
            check_range(r, num_kv, [&](int n) { return scan_kv_tile(causal, m, n, block_m, block_n, sq, skv); },
                        describe("kv_tiles", causal, m, sq, skv, block_m, block_n, r), failures);
          }
          for (int n = 0; n < num_kv; ++n) {
            const TileRange r = Trait::q_tiles(n, block_m, block_n, sq, skv);
            check_range(r, num_q, [&](int m) { return scan_q_tile(causal, n, m, block_m, block_n, sq, skv); },
                        describe("q_tiles", causal, n, sq, skv, block_m, block_n, r), failures);
          }
          if (failures > 10) return;
        }
      }
    }
  }
}

TEST(BiasTraitTiles, NoBias) { check_tile_ranges<sdpa::NoBias>(CausalVariant::kNone); }
TEST(BiasTraitTiles, CausalUpperLeft) { check_tile_ranges<sdpa::CausalUpperLeft>(CausalVariant::kUpperLeft); }
TEST(BiasTraitTiles, CausalLowerRight) { check_tile_ranges<sdpa::CausalLowerRight>(CausalVariant::kLowerRight); }

bool same_range(const TileRange& a, const TileRange& b) {
  return a.begin == b.begin && a.end == b.end && a.unmasked_begin == b.unmasked_begin &&
         a.unmasked_end == b.unmasked_end;
}

// The additive part never removes a whole tile (a dense mask is applied element-wise), so a trait's
// ranges are exactly those of its causal mask; the checks above then cover every trait.
template <class Trait, class MaskOnly>
void check_same_ranges() {
  for (int sq : {1, 17, 113, 1000}) {
    for (int skv : {1, 17, 113, 1000}) {
      for (int block_m : kBlocks) {
        for (int block_n : kBlocks) {
          for (int m = 0; m * block_m < sq; ++m) {
            ASSERT_TRUE(same_range(Trait::kv_tiles(m, block_m, block_n, sq, skv),
                                   MaskOnly::kv_tiles(m, block_m, block_n, sq, skv)));
          }
          for (int n = 0; n * block_n < skv; ++n) {
            ASSERT_TRUE(same_range(Trait::q_tiles(n, block_m, block_n, sq, skv),
                                   MaskOnly::q_tiles(n, block_m, block_n, sq, skv)));
          }
        }
      }
    }
  }
}

TEST(BiasTraitTiles, AdditivePartsKeepTheMaskRanges) {
  check_same_ranges<sdpa::Alibi, sdpa::NoBias>();
  check_same_ranges<sdpa::DenseBias, sdpa::NoBias>();
  check_same_ranges<sdpa::AlibiCausalUpperLeft, sdpa::CausalUpperLeft>();
  check_same_ranges<sdpa::DenseBiasCausalUpperLeft, sdpa::CausalUpperLeft>();
  check_same_ranges<sdpa::AlibiCausalLowerRight, sdpa::CausalLowerRight>();
  check_same_ranges<sdpa::DenseBiasCausalLowerRight, sdpa::CausalLowerRight>();
}

// Lower-right with Sq > Skv: the top Sq - Skv rows see no key, and a block made only of them visits nothing.
TEST(BiasTraitTiles, LowerRightSkipsBlocksOfEmptyRows) {
  const int sq = 1000, skv = 113, block_m = 64, block_n = 64;
  for (int m = 0; m * block_m < sq; ++m) {
    const int last_row = std::min(sq, (m + 1) * block_m) - 1;
    const bool any_row_sees_a_key = last_row + (skv - sq) >= 0;
    EXPECT_EQ(!sdpa::CausalLowerRight::kv_tiles(m, block_m, block_n, sq, skv).empty(), any_row_sees_a_key) << m;
  }
}

// ---- spans, packed GQA blocks, split-KV parts --------------------------------------------------------

// Forward over a span: query positions [first, last] against key tile n.
TileScan scan_kv_span(CausalVariant causal, PositionSpan rows, int n, int block_n, int sq, int skv) {
  TileScan scan;
  for (int i = rows.first; i <= rows.last; ++i) {
    for (int j = n * block_n; j < (n + 1) * block_n; ++j) {
      const bool visible = j < skv && spec_kept(causal, i, j, sq, skv);
      scan.any = scan.any || visible;
      scan.all = scan.all && visible;
      if (scan.any && !scan.all) return scan;
    }
  }
  return scan;
}

// Backward over a span: key positions [first, last] against query tile m.
TileScan scan_q_span(CausalVariant causal, PositionSpan cols, int m, int block_m, int sq, int skv) {
  TileScan scan;
  for (int j = cols.first; j <= cols.last; ++j) {
    for (int i = m * block_m; i < (m + 1) * block_m; ++i) {
      const bool visible = i < sq && spec_kept(causal, i, j, sq, skv);
      scan.any = scan.any || visible;
      scan.all = scan.all && visible;
      if (scan.any && !scan.all) return scan;
    }
  }
  return scan;
}

std::string describe_span(const char* what, CausalVariant causal, PositionSpan span, int sq, int skv, int block,
                          const TileRange& r) {
  return std::string(what) + " causal=" + sdpa::causal_variant_name(causal) + " span=[" +
         std::to_string(span.first) + ", " + std::to_string(span.last) + "] Sq=" + std::to_string(sq) +
         " Skv=" + std::to_string(skv) + " block=" + std::to_string(block) + " -> [" + std::to_string(r.begin) +
         ", " + std::to_string(r.end) + ") unmasked [" + std::to_string(r.unmasked_begin) + ", " +
         std::to_string(r.unmasked_end) + ")";
}

// Spans that start anywhere, not on a block boundary: decode tiles (one or a few positions), blocks
// shifted by one, and the positions of packed GQA blocks.
template <class Trait>
void check_span_ranges(CausalVariant causal) {
  int failures = 0;
  const std::vector<int> sizes = {1, 2, 15, 17, 64, 65, 113, 257};
  for (int sq : sizes) {
    for (int skv : sizes) {
      for (int block : kBlocks) {
        const int num_kv = (skv + block - 1) / block, num_q = (sq + block - 1) / block;
        for (int length : {1, 2, 3, 16, 17, 64}) {
          for (int first = 0; first < sq; first += (first < 4 ? 1 : 7)) {
            const PositionSpan rows{first, std::min(sq, first + length) - 1};
            const TileRange r = Trait::kv_tiles(rows, block, sq, skv);
            check_range(r, num_kv, [&](int n) { return scan_kv_span(causal, rows, n, block, sq, skv); },
                        describe_span("kv_tiles", causal, rows, sq, skv, block, r), failures);
          }
          for (int first = 0; first < skv; first += (first < 4 ? 1 : 7)) {
            const PositionSpan cols{first, std::min(skv, first + length) - 1};
            const TileRange r = Trait::q_tiles(cols, block, sq, skv);
            check_range(r, num_q, [&](int m) { return scan_q_span(causal, cols, m, block, sq, skv); },
                        describe_span("q_tiles", causal, cols, sq, skv, block, r), failures);
          }
        }
        if (failures > 10) return;
      }
    }
  }
}

TEST(BiasTraitSpans, NoBias) { check_span_ranges<sdpa::NoBias>(CausalVariant::kNone); }
TEST(BiasTraitSpans, CausalUpperLeft) { check_span_ranges<sdpa::CausalUpperLeft>(CausalVariant::kUpperLeft); }
TEST(BiasTraitSpans, CausalLowerRight) { check_span_ranges<sdpa::CausalLowerRight>(CausalVariant::kLowerRight); }

// A packed GQA block holds rows of `group` query heads; its span must be exactly the positions its packed
// rows cover, and the key tiles it visits those a scan over its packed rows finds.
template <class Trait>
void check_packed_blocks(CausalVariant causal) {
  int failures = 0;
  for (int group : {1, 2, 3, 4, 7}) {
    for (int sq : {1, 2, 17, 64, 113, 257}) {
      for (int skv : {1, 17, 113, 257}) {
        for (int block_m : kBlocks) {
          for (int block_n : kBlocks) {
            const BlockCoord coord{0, 0, 0, group, sq, skv};
            for (int m = 0; m * block_m < sq * group; ++m) {
              const PositionSpan span = PositionSpan::of_packed_block(m, block_m, group, sq);
              int lo = sq, hi = -1;
              for (int r = m * block_m; r < (m + 1) * block_m && r < sq * group; ++r) {
                lo = std::min(lo, coord.position(r));
                hi = std::max(hi, coord.position(r));
              }
              ASSERT_EQ(span.first, lo) << "group=" << group << " sq=" << sq << " m=" << m;
              ASSERT_EQ(span.last, hi) << "group=" << group << " sq=" << sq << " m=" << m;
              const TileRange r = Trait::kv_tiles(span, block_n, sq, skv);
              const int num_kv = (skv + block_n - 1) / block_n;
              check_range(r, num_kv, [&](int n) { return scan_kv_span(causal, span, n, block_n, sq, skv); },
                          describe_span("packed kv_tiles", causal, span, sq, skv, block_n, r), failures);
            }
            if (failures > 10) return;
          }
        }
      }
    }
  }
}

TEST(BiasTraitSpans, PackedGqaBlocksCausalUpperLeft) {
  check_packed_blocks<sdpa::CausalUpperLeft>(CausalVariant::kUpperLeft);
}
TEST(BiasTraitSpans, PackedGqaBlocksCausalLowerRight) {
  check_packed_blocks<sdpa::CausalLowerRight>(CausalVariant::kLowerRight);
}

// Split-KV: the parts of a range cover it in order, each tile once, and each tile keeps its masking (so a
// part's unmasked sub-range is exact, given the whole range's is, which the scans above prove).
template <class Trait>
void check_splits() {
  for (int sq : {1, 17, 113, 1000}) {
    for (int skv : {1, 17, 113, 1000}) {
      for (int block_m : kBlocks) {
        for (int block_n : kBlocks) {
          for (int m = 0; m * block_m < sq; ++m) {
            const TileRange whole = Trait::kv_tiles(m, block_m, block_n, sq, skv);
            for (int num_splits : {1, 2, 3, 5, 8, 64}) {
              int next = whole.begin;
              for (int split = 0; split < num_splits; ++split) {
                const TileRange part = whole.split(split, num_splits);
                const std::string where = "sq=" + std::to_string(sq) + " skv=" + std::to_string(skv) +
                                          " m=" + std::to_string(m) + " split " + std::to_string(split) + "/" +
                                          std::to_string(num_splits);
                ASSERT_EQ(part.begin, next) << where;
                ASSERT_LE(part.begin, part.end) << where;
                ASSERT_TRUE(part.begin <= part.unmasked_begin && part.unmasked_begin <= part.unmasked_end &&
                            part.unmasked_end <= part.end)
                    << where;
                const int count = whole.end - whole.begin;
                ASSERT_LE(part.end - part.begin, (count + num_splits - 1) / num_splits) << where << ": unbalanced";
                for (int t = part.begin; t < part.end; ++t) ASSERT_EQ(part.needs_mask(t), whole.needs_mask(t)) << where;
                next = part.end;
              }
              ASSERT_EQ(next, whole.end);
            }
          }
        }
      }
    }
  }
}

TEST(BiasTraitSplits, NoBias) { check_splits<sdpa::NoBias>(); }
TEST(BiasTraitSplits, CausalUpperLeft) { check_splits<sdpa::CausalUpperLeft>(); }
TEST(BiasTraitSplits, CausalLowerRight) { check_splits<sdpa::CausalLowerRight>(); }

}  // namespace
