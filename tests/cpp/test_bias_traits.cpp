// The bias traits' element semantics against the spec, on the host: masked(), value(), score(), the split
// form and staging are compared with the formulas written out here. Tile ranges: test_tile_ranges.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "bias/bias_trait.cuh"
#include "common/params.hpp"

namespace {

using sdpa::BiasDesc;
using sdpa::BiasKind;
using sdpa::BlockCoord;
using sdpa::CausalVariant;

constexpr float kInf = std::numeric_limits<float>::infinity();

// ---- the spec, written out -------------------------------------------------------------------------

bool spec_kept(CausalVariant causal, int i, int j, int seqlen_q, int seqlen_kv) {
  if (causal == CausalVariant::kUpperLeft) return j <= i;
  if (causal == CausalVariant::kLowerRight) return j <= i + (seqlen_kv - seqlen_q);
  return true;
}

double spec_alibi(double slope, int i, int j, int seqlen_q, int seqlen_kv) {
  return -slope * std::abs(static_cast<double>(i) + seqlen_kv - seqlen_q - j);
}

// A scaled score that varies with (i, j) and is never a round number, so additions are really checked.
float some_score(int i, int j) { return std::sin(0.37f * i + 1.13f * j) * 4.0f + 0.01f; }

// The coordinate of a block of query head h alone (group 1), as today's kernels build it.
BlockCoord one_head(int b, int h, int seqlen_q, int seqlen_kv) { return {b, h, h, 1, seqlen_q, seqlen_kv}; }

// ---- the trait list ----------------------------------------------------------------------------------

// Every entry of sdpa/bias_traits.def names a trait of that kind and causal variant, and bias_trait_name()
// maps the (kind, causal) pair back to the entry's name.
TEST(BiasTraitList, EntriesMatchTheirTraits) {
  int entries = 0;
#define SDPA_BIAS_TRAIT(Name, Kind, Causal)                                       \
  {                                                                               \
    ++entries;                                                                    \
    EXPECT_EQ(sdpa::Name::kKind, BiasKind::Kind) << #Name;                        \
    EXPECT_EQ(sdpa::Name::kCausal, CausalVariant::Causal) << #Name;               \
    BiasDesc desc;                                                                \
    desc.kind = BiasKind::Kind;                                                   \
    desc.causal = CausalVariant::Causal;                                          \
    EXPECT_EQ(sdpa::bias_trait_name(desc), #Name);                                \
  }
#include "sdpa/bias_traits.def"
#undef SDPA_BIAS_TRAIT
  EXPECT_EQ(entries, 9) << "every (kind, causal) pair has exactly one trait";
}

// ---- element semantics -----------------------------------------------------------------------------

const std::vector<std::pair<int, int>> kElementSizes = {
    {1, 1},    {1, 17},    {17, 1},   {17, 17},  {17, 113},   {113, 17},   {113, 113},
    {1, 1000}, {1000, 1},  {113, 1000}, {1000, 113}, {1000, 1000}};

// Checks masked(), value() and score() of `Trait` for batch b, head h against `expected_value`, the
// additive part the spec gives (-inf for a key a dense mask removes), and the causal variant `causal`.
template <class Trait, class ExpectedValue>
void check_elements(const typename Trait::Params& params, CausalVariant causal, int b, int h, int seqlen_q,
                    int seqlen_kv, ExpectedValue expected_value) {
  const Trait trait(params, one_head(b, h, seqlen_q, seqlen_kv), h);
  int failures = 0;
  for (int i = 0; i < seqlen_q && failures < 5; ++i) {
    for (int j = 0; j < seqlen_kv && failures < 5; ++j) {
      const bool kept = spec_kept(causal, i, j, seqlen_q, seqlen_kv);
      const double value = expected_value(i, j);
      const float s = some_score(i, j);
      const float score = trait.template score<float>(s, i, j);
      const double expected_score = (!kept || value == -INFINITY) ? -INFINITY : s + value;
      const bool ok_mask = trait.masked(i, j) == !kept;
      const bool ok_value = value == -INFINITY ? trait.template value<float>(i, j) == -kInf
                                               : std::abs(trait.template value<float>(i, j) - value) <=
                                                     1e-6 * (1.0 + std::abs(value));
      const bool ok_score = expected_score == -INFINITY
                                ? score == -kInf
                                : std::abs(score - expected_score) <= 1e-5 * (1.0 + std::abs(s) + std::abs(value));
      if (!(ok_mask && ok_value && ok_score)) {
        ++failures;
        ADD_FAILURE() << "b=" << b << " h=" << h << " Sq=" << seqlen_q << " Skv=" << seqlen_kv << " i=" << i
                      << " j=" << j << ": masked=" << trait.masked(i, j) << " (kept " << kept
                      << "), value=" << trait.template value<float>(i, j) << " (want " << value
                      << "), score=" << score << " (want " << expected_score << ")";
      }
    }
  }
}

template <class Trait>
void check_no_additive(CausalVariant causal) {
  static_assert(!Trait::kHasValue, "a mask-only trait must let kernels skip the bias step");
  EXPECT_EQ(Trait::kCausal, causal);
  EXPECT_EQ(Trait::kIsCausal, causal != CausalVariant::kNone);
  for (auto [sq, skv] : kElementSizes) {
    check_elements<Trait>(Trait::make_params(BiasDesc{}), causal, 0, 0, sq, skv, [](int, int) { return 0.0; });
  }
}

TEST(BiasTraitElements, NoBias) { check_no_additive<sdpa::NoBias>(CausalVariant::kNone); }
TEST(BiasTraitElements, CausalUpperLeft) { check_no_additive<sdpa::CausalUpperLeft>(CausalVariant::kUpperLeft); }
TEST(BiasTraitElements, CausalLowerRight) {
  check_no_additive<sdpa::CausalLowerRight>(CausalVariant::kLowerRight);
}

// Slopes for B = 3, H = 5, distinct per (b, h) so a wrong index shows.
struct SlopeTable {
  static constexpr int kBatch = 3, kHeads = 5;
  std::vector<float> values;
  int64_t stride_batch, stride_head;
  double slope(int b, int h) const { return values[b * stride_batch + h * stride_head]; }
};

// (B, H) contiguous, (H, B) transposed, and (H,) broadcast over batch.
std::vector<SlopeTable> slope_tables() {
  std::vector<SlopeTable> tables;
  auto fill = [](int n) {
    std::vector<float> v(n);
    for (int x = 0; x < n; ++x) v[x] = std::exp2(-0.5f * (x + 1)) * (1.0f + 0.01f * x);
    return v;
  };
  tables.push_back({fill(SlopeTable::kBatch * SlopeTable::kHeads), SlopeTable::kHeads, 1});
  tables.push_back({fill(SlopeTable::kBatch * SlopeTable::kHeads), 1, SlopeTable::kBatch});
  tables.push_back({fill(SlopeTable::kHeads), 0, 1});
  return tables;
}

template <class Trait>
void check_alibi(CausalVariant causal) {
  static_assert(Trait::kHasValue, "ALiBi adds a value");
  EXPECT_EQ(Trait::kKind, BiasKind::kAlibi);
  EXPECT_EQ(Trait::kCausal, causal);
  for (const SlopeTable& table : slope_tables()) {
    BiasDesc desc;
    desc.kind = BiasKind::kAlibi;
    desc.causal = causal;
    desc.alibi = {table.values.data(), table.stride_batch, table.stride_head};
    for (auto [sq, skv] : kElementSizes) {
      // Every (b, h) on small problems; the corners on large ones, to keep the test quick.
      const bool small = static_cast<int64_t>(sq) * skv <= 113 * 113;
      for (int b = 0; b < SlopeTable::kBatch; ++b) {
        for (int h = 0; h < SlopeTable::kHeads; ++h) {
          if (!small && !((b == 0 && h == 0) || (b == SlopeTable::kBatch - 1 && h == SlopeTable::kHeads - 1))) continue;
          const double slope = table.slope(b, h);
          check_elements<Trait>(Trait::make_params(desc), causal, b, h, sq, skv,
                                [&](int i, int j) { return spec_alibi(slope, i, j, sq, skv); });
        }
      }
    }
  }
}

// The split form: where split_holds(), row_part(i, row0) + column_part(j, row0) must equal value(i, j) on
// every kept element, for any anchor row row0 (kernels pass the block's first row).
template <class Trait>
void check_alibi_split(CausalVariant causal) {
  static_assert(Trait::kSplittable, "causal ALiBi has a split form");
  const float slopes[] = {0.5f, 0.0625f};
  BiasDesc desc;
  desc.kind = BiasKind::kAlibi;
  desc.causal = causal;
  desc.alibi = {slopes, 0, 1};
  int checked_problems = 0;
  for (auto [sq, skv] : kElementSizes) {
    const bool expected = causal == CausalVariant::kLowerRight || skv >= sq;
    EXPECT_EQ(Trait::split_holds(sq, skv), expected) << "sq=" << sq << " skv=" << skv;
    if (!Trait::split_holds(sq, skv) || static_cast<int64_t>(sq) * skv > 1000 * 113) continue;
    ++checked_problems;
    for (int h = 0; h < 2; ++h) {
      const Trait trait(Trait::make_params(desc), one_head(0, h, sq, skv), h);
      for (int row0 : {0, 64, sq - 1}) {
        for (int i = 0; i < sq; ++i) {
          for (int j = 0; j < skv; ++j) {
            if (trait.masked(i, j)) continue;
            const double split = double(trait.row_part(i, row0)) + double(trait.column_part(j, row0));
            ASSERT_NEAR(split, trait.template value<float>(i, j), 1e-3 * (1.0 + std::abs(split)))
                << "sq=" << sq << " skv=" << skv << " i=" << i << " j=" << j << " row0=" << row0;
          }
        }
      }
    }
  }
  EXPECT_GT(checked_problems, 3);
}

TEST(BiasTraitSplit, AlibiCausalUpperLeft) { check_alibi_split<sdpa::AlibiCausalUpperLeft>(CausalVariant::kUpperLeft); }
TEST(BiasTraitSplit, AlibiCausalLowerRight) {
  check_alibi_split<sdpa::AlibiCausalLowerRight>(CausalVariant::kLowerRight);
}
TEST(BiasTraitSplit, OnlyCausalAlibiSplits) {
  EXPECT_FALSE(sdpa::Alibi::kSplittable);
  EXPECT_FALSE(sdpa::DenseBiasCausalUpperLeft::kSplittable);
  EXPECT_FALSE(sdpa::CausalLowerRight::kSplittable);
  EXPECT_FALSE(sdpa::Alibi::split_holds(7, 7));
}

// A variable-length batch's lengths are on the device, so its form must hold for every length: the split
// form only for lower-right ALiBi (mask and ALiBi share the diagonal), checked against split_holds() over
// a grid of lengths, and never staging.
TEST(BiasTraitSplit, VarlenFormHoldsForEveryLength) {
  EXPECT_TRUE(sdpa::split_holds_for_any_lengths<sdpa::AlibiCausalLowerRight>());
  EXPECT_FALSE(sdpa::split_holds_for_any_lengths<sdpa::AlibiCausalUpperLeft>());
  EXPECT_FALSE(sdpa::split_holds_for_any_lengths<sdpa::Alibi>());
  EXPECT_FALSE(sdpa::split_holds_for_any_lengths<sdpa::NoBias>());
  for (int q = 0; q <= 40; ++q) {
    for (int kv = 0; kv <= 40; ++kv) ASSERT_TRUE(sdpa::AlibiCausalLowerRight::split_holds(q, kv)) << q << " " << kv;
  }
  int cu[] = {0, 3};
  sdpa::AttentionProblem varlen;
  varlen.cu_seqlens_q = cu;
  varlen.seqlen_q = varlen.seqlen_kv = 3;
  varlen.scale = 0.125f;
  EXPECT_EQ(sdpa::select_bias_form<sdpa::AlibiCausalLowerRight>(varlen, {}), sdpa::BiasForm::kSplit);
  // Upper-left would split at these (max) lengths, but a shorter sequence with Sq > Skv would not.
  EXPECT_EQ(sdpa::select_bias_form<sdpa::AlibiCausalUpperLeft>(varlen, {}), sdpa::BiasForm::kElementwise);
  varlen.scale = -0.125f;  // the split form folds the scale into the exponent: positive scales only
  EXPECT_EQ(sdpa::select_bias_form<sdpa::AlibiCausalLowerRight>(varlen, {}), sdpa::BiasForm::kElementwise);
}

TEST(BiasTraitElements, Alibi) { check_alibi<sdpa::Alibi>(CausalVariant::kNone); }
TEST(BiasTraitElements, AlibiCausalUpperLeft) { check_alibi<sdpa::AlibiCausalUpperLeft>(CausalVariant::kUpperLeft); }
TEST(BiasTraitElements, AlibiCausalLowerRight) {
  check_alibi<sdpa::AlibiCausalLowerRight>(CausalVariant::kLowerRight);
}

// A dense (B, H, Sq, Skv) tensor in one of several stride patterns; data holds floats or mask bytes.
struct DenseTensor {
  static constexpr int kBatch = 2, kHeads = 3;
  std::vector<float> values;
  std::vector<unsigned char> mask;
  int64_t stride_batch = 0, stride_head = 0, stride_q = 0, stride_kv = 0;

  int64_t index(int b, int h, int i, int j) const {
    return b * stride_batch + h * stride_head + i * stride_q + j * stride_kv;
  }
  double value(int b, int h, int i, int j) const {
    if (!mask.empty()) return mask[index(b, h, i, j)] ? 0.0 : -INFINITY;
    return values[index(b, h, i, j)];
  }
  sdpa::DenseDesc desc() const {
    sdpa::DenseDesc d;
    d.data = mask.empty() ? static_cast<const void*>(values.data()) : mask.data();
    d.dtype = mask.empty() ? sdpa::DType::kFloat32 : sdpa::DType::kBool;
    d.stride_batch = stride_batch;
    d.stride_head = stride_head;
    d.stride_q = stride_q;
    d.stride_kv = stride_kv;
    return d;
  }
};

enum class DensePattern { kFull, kBroadcastBatchHead, kBroadcastQuery, kKeyMajor };

DenseTensor make_dense(DensePattern pattern, bool is_mask, int sq, int skv, std::mt19937& rng) {
  DenseTensor t;
  const int64_t plane = static_cast<int64_t>(sq) * skv;
  int64_t size = 0;
  switch (pattern) {
    case DensePattern::kFull:  // (B, H, Sq, Skv) contiguous
      t = {{}, {}, DenseTensor::kHeads * plane, plane, skv, 1};
      size = DenseTensor::kBatch * DenseTensor::kHeads * plane;
      break;
    case DensePattern::kBroadcastBatchHead:  // (1, 1, Sq, Skv)
      t = {{}, {}, 0, 0, skv, 1};
      size = plane;
      break;
    case DensePattern::kBroadcastQuery:  // (B, 1, 1, Skv), a padding mask
      t = {{}, {}, skv, 0, 0, 1};
      size = DenseTensor::kBatch * skv;
      break;
    case DensePattern::kKeyMajor:  // (H, Skv, Sq) storage viewed as (1, H, Sq, Skv)
      t = {{}, {}, 0, plane, 1, sq};
      size = DenseTensor::kHeads * plane;
      break;
  }
  if (is_mask) {
    // Nonzero means attend, whatever the byte: use 1, 2 and 255 next to 0.
    const unsigned char bytes[] = {0, 1, 2, 255};
    std::uniform_int_distribution<int> pick(0, 3);
    t.mask.resize(size);
    for (auto& m : t.mask) m = bytes[pick(rng)];
  } else {
    std::uniform_real_distribution<float> dist(-3.0f, 3.0f);
    t.values.resize(size);
    for (auto& x : t.values) x = dist(rng);
  }
  return t;
}

template <class Trait>
void check_dense(CausalVariant causal) {
  static_assert(Trait::kHasValue, "a dense bias adds a value");
  EXPECT_EQ(Trait::kKind, BiasKind::kDense);
  EXPECT_EQ(Trait::kCausal, causal);
  std::mt19937 rng(1234);
  const std::vector<std::pair<int, int>> sizes = {{1, 1}, {1, 17}, {17, 1}, {17, 113}, {113, 17}, {113, 1000}, {1000, 113}};
  for (bool is_mask : {false, true}) {
    for (DensePattern pattern : {DensePattern::kFull, DensePattern::kBroadcastBatchHead, DensePattern::kBroadcastQuery,
                                 DensePattern::kKeyMajor}) {
      for (auto [sq, skv] : sizes) {
        const DenseTensor tensor = make_dense(pattern, is_mask, sq, skv, rng);
        BiasDesc desc;
        desc.kind = BiasKind::kDense;
        desc.causal = causal;
        desc.dense = tensor.desc();
        for (int b = 0; b < DenseTensor::kBatch; ++b) {
          for (int h = 0; h < DenseTensor::kHeads; ++h) {
            check_elements<Trait>(Trait::make_params(desc), causal, b, h, sq, skv,
                                  [&](int i, int j) { return tensor.value(b, h, i, j); });
          }
        }
      }
    }
  }
}

TEST(BiasTraitElements, DenseBias) { check_dense<sdpa::DenseBias>(CausalVariant::kNone); }
TEST(BiasTraitElements, DenseBiasCausalUpperLeft) {
  check_dense<sdpa::DenseBiasCausalUpperLeft>(CausalVariant::kUpperLeft);
}
TEST(BiasTraitElements, DenseBiasCausalLowerRight) {
  check_dense<sdpa::DenseBiasCausalLowerRight>(CausalVariant::kLowerRight);
}

// ---- packed rows: the head is read per row ---------------------------------------------------------

// In a packed block the trait is built per row, from the row's query head: ALiBi then reads that head's
// slope and a dense bias that head's slice. Every packed row must see the spec's value for its
// (head, position).
TEST(BiasTraitPacked, AlibiAndDenseReadTheRowsHead) {
  const int batch = 2, heads_kv = 2, sq = 17, skv = 33;
  std::mt19937 rng(7);
  for (int group : {1, 2, 3}) {
    const int heads_q = heads_kv * group;
    std::vector<float> slopes(batch * heads_q);
    for (size_t x = 0; x < slopes.size(); ++x) slopes[x] = 0.03f * (x + 1);
    BiasDesc alibi;
    alibi.kind = BiasKind::kAlibi;
    alibi.causal = CausalVariant::kUpperLeft;
    alibi.alibi = {slopes.data(), heads_q, 1};
    std::vector<float> dense(static_cast<size_t>(batch) * heads_q * sq * skv);
    std::uniform_real_distribution<float> dist(-3.0f, 3.0f);
    for (auto& x : dense) x = dist(rng);
    BiasDesc dense_desc;
    dense_desc.kind = BiasKind::kDense;
    dense_desc.dense = {dense.data(), sdpa::DType::kFloat32, int64_t{heads_q} * sq * skv, int64_t{sq} * skv, skv, 1};
    for (int b = 0; b < batch; ++b) {
      for (int hk = 0; hk < heads_kv; ++hk) {
        const BlockCoord coord{b, hk, hk * group, group, sq, skv};
        for (int r = 0; r < sq * group; ++r) {
          const int h = coord.head_q(r), i = coord.position(r);
          ASSERT_EQ(h / group, hk);
          const sdpa::AlibiCausalUpperLeft a(sdpa::AlibiCausalUpperLeft::make_params(alibi), coord, h);
          const sdpa::DenseBias d(sdpa::DenseBias::make_params(dense_desc), coord, h);
          for (int j = 0; j < skv; ++j) {
            ASSERT_NEAR(a.value<float>(i, j), spec_alibi(slopes[b * heads_q + h], i, j, sq, skv), 1e-5)
                << "group=" << group << " r=" << r;
            const size_t index = ((static_cast<size_t>(b) * heads_q + h) * sq + i) * skv + j;
            ASSERT_EQ(d.value<float>(i, j), dense[index]) << "group=" << group << " r=" << r;
          }
        }
      }
    }
  }
}

}  // namespace

// Staging needs contiguous keys and 16-byte aligned rows; anything else must take the per-score path.
TEST(BiasTraitStaging, StageableOnlyWithAlignedContiguousRows) {
  alignas(16) static const unsigned char storage[64] = {};
  auto stageable = [](const void* data, sdpa::DType dtype, int64_t sb, int64_t sh, int64_t sq, int64_t skv) {
    BiasDesc desc;
    desc.kind = BiasKind::kDense;
    desc.dense = {data, dtype, sb, sh, sq, skv};
    return sdpa::DenseBias::stageable(sdpa::DenseBias::make_params(desc));
  };
  const auto bf16 = sdpa::DType::kBFloat16;
  EXPECT_TRUE(stageable(storage, bf16, 0, 0, 512, 1));          // (Sq, 512) bf16 rows: 1024 bytes
  EXPECT_TRUE(stageable(storage, bf16, 0, 0, 0, 1));            // one row broadcast over queries
  EXPECT_TRUE(stageable(storage, sdpa::DType::kBool, 0, 0, 16, 1));
  EXPECT_FALSE(stageable(storage, bf16, 0, 0, 113, 1));         // 226-byte rows
  EXPECT_FALSE(stageable(storage, sdpa::DType::kBool, 0, 0, 24, 1));
  EXPECT_FALSE(stageable(storage, bf16, 0, 0, 512, 2));         // keys not contiguous
  EXPECT_FALSE(stageable(storage + 2, bf16, 0, 0, 512, 1));     // misaligned base
  EXPECT_FALSE(stageable(storage, bf16, 0, 12, 512, 1));        // misaligned head slices
  EXPECT_FALSE(stageable(storage, bf16, 0, 0, -512, 1));        // rows backwards: TMA strides are positive
  EXPECT_FALSE(stageable(storage, bf16, int64_t(1) << 39, 0, 512, 1));  // 2^40 bytes between batches
  EXPECT_FALSE(sdpa::Alibi::stageable(sdpa::Alibi::Params{}));
}

// The staged form folds the scale into the exponent on sm90 (the tile goes into the accumulator divided by
// it), so it is chosen for positive finite scales only.
TEST(BiasTraitStaging, StagedFormNeedsAPositiveScale) {
  alignas(16) static const unsigned char storage[64] = {};
  BiasDesc desc;
  desc.kind = BiasKind::kDense;
  desc.dense = {storage, sdpa::DType::kBFloat16, 0, 0, 512, 1};
  const auto params = sdpa::DenseBias::make_params(desc);
  sdpa::AttentionProblem problem;
  problem.seqlen_q = problem.seqlen_kv = 512;
  for (float scale : {0.125f, 0.0f, -0.125f, std::numeric_limits<float>::infinity()}) {
    problem.scale = scale;
    EXPECT_EQ(sdpa::select_bias_form<sdpa::DenseBias>(problem, params),
              scale > 0 && std::isfinite(scale) ? sdpa::BiasForm::kStaged : sdpa::BiasForm::kElementwise)
        << scale;
  }
}

// What a TMA descriptor is given: byte extents and strides, broadcast dims at extent 1.
TEST(BiasTraitStaging, TileSourceCountsBytesAndBroadcastsZeroStrides) {
  alignas(16) static const unsigned char storage[64] = {};
  BiasDesc desc;
  desc.kind = BiasKind::kDense;
  desc.dense = {storage, sdpa::DType::kBFloat16, 0, 300 * 512, 512, 1};  // (1, H, Sq, Skv) broadcast over batch
  auto source = sdpa::DenseBias::tile_source(sdpa::DenseBias::make_params(desc), 2, 300, 500, 4, 3);
  EXPECT_EQ(source.element_bytes, 2);
  EXPECT_EQ(source.extent[0], 1000);  // Skv = 500 keys of 2 bytes (rows are 512 keys apart)
  EXPECT_EQ(source.extent[1], 300);
  EXPECT_EQ(source.extent[2], 4);
  EXPECT_EQ(source.extent[3], 1);     // broadcast
  EXPECT_EQ(source.stride_bytes[0], 1024);
  EXPECT_EQ(source.stride_bytes[1], 300 * 1024);
  desc.dense = {storage, sdpa::DType::kBool, 0, 0, 0, 1};  // one mask row for every batch, head and query
  source = sdpa::DenseBias::tile_source(sdpa::DenseBias::make_params(desc), 2, 300, 500, 4, 3);
  EXPECT_EQ(source.element_bytes, 1);
  EXPECT_EQ(source.extent[0], 500);
  EXPECT_EQ(source.extent[1], 1);
  EXPECT_EQ(source.extent[2], 1);
  EXPECT_EQ(source.extent[3], 1);
}
