// reference_forward() against cases small enough to work out by hand, and against properties that hold for
// any input (removing a key by mask equals deleting it, layout does not matter, GQA reads the right head).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "sdpa/sdpa.hpp"
#include "test_util.hpp"

namespace {

using sdpa::BiasDesc;
using sdpa::BiasKind;
using sdpa::CausalVariant;
using sdpa::DType;
using sdpa::StatusCode;
using sdpa_test::HostTensor;
using sdpa_test::Layout;
using sdpa_test::make_tensor;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// q, k, v random in [-1, 1]; o poisoned with NaN so a row the reference forgets to write shows.
struct Inputs {
  HostTensor q, k, v, o;
  std::vector<float> lse;

  Inputs(int batch, int heads_q, int heads_kv, int sq, int skv, int dim, unsigned seed, Layout layout = Layout::kBHSD)
      : q(make_tensor(batch, heads_q, sq, dim, layout)),
        k(make_tensor(batch, heads_kv, skv, dim, layout)),
        v(make_tensor(batch, heads_kv, skv, dim, layout)),
        o(make_tensor(batch, heads_q, sq, dim, layout)),
        lse(static_cast<size_t>(batch) * heads_q * sq, std::numeric_limits<float>::quiet_NaN()) {
    std::mt19937 rng(seed);
    sdpa_test::fill_uniform(q.data, rng, -1.0f, 1.0f);
    sdpa_test::fill_uniform(k.data, rng, -1.0f, 1.0f);
    sdpa_test::fill_uniform(v.data, rng, -1.0f, 1.0f);
    std::fill(o.data.begin(), o.data.end(), std::numeric_limits<float>::quiet_NaN());
  }

  sdpa::AttentionProblem problem(float scale = 0.5f) { return sdpa_test::host_problem(q, k, v, o, lse.data(), scale); }
  float row_lse(int b, int h, int i) const { return lse[(static_cast<size_t>(b) * q.heads + h) * q.seqlen + i]; }
};

void run_reference(const sdpa::AttentionProblem& p, const BiasDesc& bias = {}) {
  const sdpa::Status s = sdpa::reference_forward(p, bias);
  ASSERT_TRUE(s.ok()) << s.message;
}

// One query, one key: the softmax weight is 1 whatever the score, so o = v and LSE = the biased score.
TEST(Reference, SingleKeyReturnsItsValue) {
  Inputs in(2, 3, 3, 1, 1, 8, 1);
  const std::vector<float> slopes = {0.5f, 0.25f, 0.125f};
  BiasDesc alibi;
  alibi.kind = BiasKind::kAlibi;  // distance 0 at Sq = Skv = 1, so it adds nothing
  alibi.alibi = {slopes.data(), 0, 1};
  for (const BiasDesc& bias : {BiasDesc{}, alibi}) {
    run_reference(in.problem(), bias);
    for (int b = 0; b < 2; ++b) {
      for (int h = 0; h < 3; ++h) {
        double qk = 0;
        for (int d = 0; d < 8; ++d) {
          EXPECT_EQ(in.o.at(b, h, 0, d), in.v.at(b, h, 0, d));
          qk += static_cast<double>(in.q.at(b, h, 0, d)) * in.k.at(b, h, 0, d);
        }
        EXPECT_NEAR(in.row_lse(b, h, 0), 0.5 * qk, 1e-6);
      }
    }
  }
}

// q = 0 makes every score equal: o is the mean of the kept values and LSE = log(number kept).
TEST(Reference, UniformScoresAverageTheValues) {
  for (CausalVariant causal : {CausalVariant::kNone, CausalVariant::kUpperLeft, CausalVariant::kLowerRight}) {
    Inputs in(1, 2, 2, 5, 7, 4, 2);
    std::fill(in.q.data.begin(), in.q.data.end(), 0.0f);
    BiasDesc bias;
    bias.causal = causal;
    run_reference(in.problem(), bias);
    for (int h = 0; h < 2; ++h) {
      for (int i = 0; i < 5; ++i) {
        const int kept = causal == CausalVariant::kNone        ? 7
                         : causal == CausalVariant::kUpperLeft ? i + 1
                                                               : i + (7 - 5) + 1;
        for (int d = 0; d < 4; ++d) {
          double sum = 0;
          for (int j = 0; j < kept; ++j) sum += in.v.at(0, h, j, d);
          EXPECT_NEAR(in.o.at(0, h, i, d), sum / kept, 1e-6) << sdpa::causal_variant_name(causal) << " i=" << i;
        }
        EXPECT_NEAR(in.row_lse(0, h, i), std::log(kept), 1e-6);
      }
    }
  }
}

// Two keys by hand: weights e^s0 / (e^s0 + e^s1) and e^s1 / (...), with the bias added after the scale.
TEST(Reference, TwoKeysWithDenseBiasByHand) {
  Inputs in(1, 1, 1, 1, 2, 3, 3);
  const std::vector<float> bias_values = {0.75f, -1.5f};
  BiasDesc bias;
  bias.kind = BiasKind::kDense;
  bias.dense = {bias_values.data(), DType::kFloat32, 0, 0, 0, 1};
  const float scale = 0.3f;
  run_reference(in.problem(scale), bias);
  double s[2];
  for (int j = 0; j < 2; ++j) {
    double qk = 0;
    for (int d = 0; d < 3; ++d) qk += static_cast<double>(in.q.at(0, 0, 0, d)) * in.k.at(0, 0, j, d);
    s[j] = scale * qk + bias_values[j];
  }
  const double w0 = std::exp(s[0]) / (std::exp(s[0]) + std::exp(s[1]));
  for (int d = 0; d < 3; ++d) {
    EXPECT_NEAR(in.o.at(0, 0, 0, d), w0 * in.v.at(0, 0, 0, d) + (1 - w0) * in.v.at(0, 0, 1, d), 1e-6);
  }
  EXPECT_NEAR(in.row_lse(0, 0, 0), std::log(std::exp(s[0]) + std::exp(s[1])), 1e-6);
}

// ALiBi with q = 0: the scores are the penalties alone, -slope * |i + (Skv - Sq) - j|.
TEST(Reference, AlibiPenalisesDistanceFromTheLowerRightDiagonal) {
  const int sq = 2, skv = 3;
  Inputs in(2, 2, 2, sq, skv, 2, 4);
  std::fill(in.q.data.begin(), in.q.data.end(), 0.0f);
  const std::vector<float> slopes = {0.5f, 1.0f, 2.0f, 0.25f};  // (B, H), distinct per (b, h)
  BiasDesc bias;
  bias.kind = BiasKind::kAlibi;
  bias.alibi = {slopes.data(), 2, 1};
  run_reference(in.problem(), bias);
  for (int b = 0; b < 2; ++b) {
    for (int h = 0; h < 2; ++h) {
      for (int i = 0; i < sq; ++i) {
        double weights[skv], total = 0;
        for (int j = 0; j < skv; ++j) total += weights[j] = std::exp(-slopes[b * 2 + h] * std::abs(i + skv - sq - j));
        for (int d = 0; d < 2; ++d) {
          double expected = 0;
          for (int j = 0; j < skv; ++j) expected += weights[j] / total * in.v.at(b, h, j, d);
          EXPECT_NEAR(in.o.at(b, h, i, d), expected, 1e-6) << b << h << i;
        }
        EXPECT_NEAR(in.row_lse(b, h, i), std::log(total), 1e-6);
      }
    }
  }
}

void expect_empty_row(const Inputs& in, int b, int h, int i) {
  for (int d = 0; d < in.o.head_dim; ++d) EXPECT_EQ(in.o.at(b, h, i, d), 0.0f) << "row " << i;
  EXPECT_EQ(in.row_lse(b, h, i), kNegInf) << "row " << i;
}

// Lower-right with Sq > Skv: row i keeps j <= i - (Sq - Skv), so the first Sq - Skv rows keep nothing.
TEST(Reference, LowerRightRowsWithNoKeyAreZero) {
  const int sq = 7, skv = 3;
  Inputs in(1, 1, 1, sq, skv, 4, 5);
  BiasDesc bias;
  bias.causal = CausalVariant::kLowerRight;
  run_reference(in.problem(), bias);
  for (int i = 0; i < sq - skv; ++i) expect_empty_row(in, 0, 0, i);
  for (int i = sq - skv; i < sq; ++i) {
    EXPECT_TRUE(std::isfinite(in.row_lse(0, 0, i)));
    for (int d = 0; d < 4; ++d) EXPECT_TRUE(std::isfinite(in.o.at(0, 0, i, d)));
  }
  // Lower-right aligns the last query with the last key, so that row keeps every key: same as no mask.
  Inputs plain(1, 1, 1, sq, skv, 4, 5);
  run_reference(plain.problem());
  for (int d = 0; d < 4; ++d) EXPECT_FLOAT_EQ(in.o.at(0, 0, sq - 1, d), plain.o.at(0, 0, sq - 1, d));
}

// A bool mask removes a key exactly as if it were not there; an all-false row outputs 0 and LSE -inf.
TEST(Reference, BoolMaskEqualsDeletingKeys) {
  const int sq = 4, skv = 6, dim = 5, removed = 2;
  Inputs in(1, 1, 1, sq, skv, dim, 6);
  std::vector<unsigned char> mask(sq * skv, 7);  // any nonzero byte means attend
  for (int i = 0; i < sq; ++i) mask[i * skv + removed] = 0;
  for (int j = 0; j < skv; ++j) mask[3 * skv + j] = 0;  // row 3 removes everything
  BiasDesc bias;
  bias.kind = BiasKind::kDense;
  bias.dense = {mask.data(), DType::kBool, 0, 0, skv, 1};
  run_reference(in.problem(), bias);

  Inputs fewer(1, 1, 1, sq, skv - 1, dim, 6);  // same q; k, v without key `removed`
  fewer.q.data = in.q.data;
  for (int j = 0, jj = 0; j < skv; ++j) {
    if (j == removed) continue;
    for (int d = 0; d < dim; ++d) {
      fewer.k.at(0, 0, jj, d) = in.k.at(0, 0, j, d);
      fewer.v.at(0, 0, jj, d) = in.v.at(0, 0, j, d);
    }
    ++jj;
  }
  run_reference(fewer.problem());
  for (int i = 0; i < 3; ++i) {
    for (int d = 0; d < dim; ++d) EXPECT_NEAR(in.o.at(0, 0, i, d), fewer.o.at(0, 0, i, d), 1e-6);
    EXPECT_NEAR(in.row_lse(0, 0, i), fewer.row_lse(0, 0, i), 1e-6);
  }
  expect_empty_row(in, 0, 0, 3);
}

// GQA: with one key per head the output is that key's value, so o[b, h] = v[b, h / group] shows the mapping.
TEST(Reference, GroupedQueryHeadsReadTheirKvHead) {
  const int heads_q = 6, heads_kv = 2;
  Inputs in(2, heads_q, heads_kv, 3, 1, 4, 7);
  run_reference(in.problem());
  for (int b = 0; b < 2; ++b) {
    for (int h = 0; h < heads_q; ++h) {
      for (int i = 0; i < 3; ++i) {
        for (int d = 0; d < 4; ++d) EXPECT_EQ(in.o.at(b, h, i, d), in.v.at(b, h / (heads_q / heads_kv), 0, d));
      }
    }
  }
}

// Strides are honoured: (B, S, H, D) storage gives the same numbers as contiguous (B, H, S, D).
TEST(Reference, LayoutDoesNotChangeTheResult) {
  Inputs contiguous(2, 4, 2, 9, 11, 8, 8, Layout::kBHSD);
  Inputs strided(2, 4, 2, 9, 11, 8, 8, Layout::kBSHD);
  for (HostTensor* t : {&strided.q, &strided.k, &strided.v}) {
    const HostTensor& src = t == &strided.q ? contiguous.q : t == &strided.k ? contiguous.k : contiguous.v;
    for (int b = 0; b < t->batch; ++b)
      for (int h = 0; h < t->heads; ++h)
        for (int s = 0; s < t->seqlen; ++s)
          for (int d = 0; d < t->head_dim; ++d) t->at(b, h, s, d) = src.at(b, h, s, d);
  }
  BiasDesc bias;
  bias.causal = CausalVariant::kUpperLeft;
  run_reference(contiguous.problem(), bias);
  run_reference(strided.problem(), bias);
  for (int b = 0; b < 2; ++b)
    for (int h = 0; h < 4; ++h)
      for (int s = 0; s < 9; ++s) {
        for (int d = 0; d < 8; ++d) ASSERT_EQ(strided.o.at(b, h, s, d), contiguous.o.at(b, h, s, d));
        ASSERT_EQ(strided.row_lse(b, h, s), contiguous.row_lse(b, h, s));
      }
}

// lse is optional.
TEST(Reference, WithoutLseStillWritesOutput) {
  Inputs in(1, 1, 1, 2, 2, 4, 9);
  sdpa::AttentionProblem p = in.problem();
  p.lse = nullptr;
  run_reference(p);
  for (float x : in.o.data) EXPECT_TRUE(std::isfinite(x));
}

void expect_invalid(const sdpa::AttentionProblem& p, const BiasDesc& bias, const std::string& field) {
  const sdpa::Status s = sdpa::reference_forward(p, bias);
  EXPECT_EQ(s.code, StatusCode::kInvalidArgument) << field;
  EXPECT_NE(s.message.find(field), std::string::npos) << "message should name " << field << ": " << s.message;
}

TEST(Reference, RejectsBadArgumentsNamingTheField) {
  Inputs in(1, 4, 2, 2, 2, 4, 10);
  const sdpa::AttentionProblem good = in.problem();
  const BiasDesc none;

  sdpa::AttentionProblem p = good;
  p.dtype = DType::kBFloat16;
  expect_invalid(p, none, "dtype");
  p = good;
  p.q.data = nullptr;
  expect_invalid(p, none, "q.data");
  p = good;
  p.o.data = nullptr;
  expect_invalid(p, none, "o.data");
  p = good;
  p.heads_kv = 3;
  expect_invalid(p, none, "heads_kv");
  p = good;
  p.seqlen_kv = 0;
  expect_invalid(p, none, "seqlen_kv");

  BiasDesc alibi;
  alibi.kind = BiasKind::kAlibi;
  expect_invalid(good, alibi, "slopes");
  const std::vector<uint16_t> half_bias(4, 0);
  BiasDesc dense;
  dense.kind = BiasKind::kDense;
  dense.dense = {half_bias.data(), DType::kFloat16, 0, 0, 2, 1};
  expect_invalid(good, dense, "dense.dtype");
  dense.dense.data = nullptr;
  expect_invalid(good, dense, "dense.data");
}

}  // namespace
