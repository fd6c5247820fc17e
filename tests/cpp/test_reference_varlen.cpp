// reference_forward() on variable-length batches (packed and paged keys) against the dense oracle run on
// each sequence alone, built independently here. Unused cache slots and pages hold NaN: reading one fails.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "sdpa/sdpa.hpp"

namespace {

constexpr int kHeadsQ = 4, kHeadsKv = 2, kDim = 8;
const float kNaN = std::numeric_limits<float>::quiet_NaN();

struct Sequence {
  int len_q, len_kv;
  std::vector<float> q, k, v;  // (len, heads, D)
};

std::vector<Sequence> make_sequences(std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<Sequence> seqs = {{2, 5, {}, {}, {}}, {0, 3, {}, {}, {}}, {3, 0, {}, {}, {}}, {1, 7, {}, {}, {}},
                                {4, 2, {}, {}, {}}};
  for (Sequence& s : seqs) {
    for (auto [vec, n] : {std::pair{&s.q, s.len_q * kHeadsQ}, {&s.k, s.len_kv * kHeadsKv}, {&s.v, s.len_kv * kHeadsKv}}) {
      vec->resize(static_cast<size_t>(n) * kDim);
      for (float& x : *vec) x = normal(rng);
    }
  }
  return seqs;
}

// The dense oracle on one sequence alone: (1, H, S, D) views over its (S, H, D) rows.
void dense_reference(const Sequence& s, const sdpa::BiasDesc& bias, std::vector<float>& o, std::vector<float>& lse) {
  o.assign(s.q.size(), 0.0f);
  lse.assign(static_cast<size_t>(kHeadsQ) * s.len_q, 0.0f);
  sdpa::AttentionProblem p;
  p.dtype = sdpa::DType::kFloat32;
  p.batch = 1;
  p.heads_q = kHeadsQ;
  p.heads_kv = kHeadsKv;
  p.seqlen_q = s.len_q;
  p.seqlen_kv = s.len_kv;
  p.head_dim = kDim;
  p.q = {s.q.data(), 0, kDim, kHeadsQ * kDim};
  p.k = {s.k.data(), 0, kDim, kHeadsKv * kDim};
  p.v = {s.v.data(), 0, kDim, kHeadsKv * kDim};
  p.o = {o.data(), 0, kDim, kHeadsQ * kDim};
  p.lse = lse.data();
  p.scale = 0.35f;
  ASSERT_TRUE(sdpa::reference_forward(p, bias).ok());
}

class ReferenceVarlen : public ::testing::TestWithParam<bool> {};  // paged or packed keys

TEST_P(ReferenceVarlen, MatchesEachSequenceAlone) {
  const bool paged = GetParam();
  std::mt19937 rng(7);
  const std::vector<Sequence> seqs = make_sequences(rng);
  const int n = static_cast<int>(seqs.size());
  std::vector<int> cu_q{0}, cu_kv{0}, used;
  for (const Sequence& s : seqs) {
    cu_q.push_back(cu_q.back() + s.len_q);
    cu_kv.push_back(cu_kv.back() + s.len_kv + 2);  // two spare slots per sequence: NaN, never read
    used.push_back(s.len_kv);
  }
  std::vector<float> q(static_cast<size_t>(cu_q.back()) * kHeadsQ * kDim);
  for (int b = 0; b < n; ++b) std::copy(seqs[b].q.begin(), seqs[b].q.end(), q.begin() + cu_q[b] * kHeadsQ * kDim);

  // Keys: packed at cu_kv, or in pages of 4 rows, handed out in a shuffled order with spare pages.
  constexpr int kPage = 4;
  const int max_pages = 3;
  std::vector<int> table(static_cast<size_t>(n) * max_pages, -1);
  std::vector<int> order(n * max_pages + 2);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  const size_t row = static_cast<size_t>(kHeadsKv) * kDim;
  std::vector<float> k(paged ? order.size() * kPage * row : cu_kv.back() * row, kNaN), v = k;
  for (int b = 0; b < n; ++b) {
    for (int j = 0; j < seqs[b].len_kv; ++j) {
      size_t at = (cu_kv[b] + j) * row;
      if (paged) {
        int& page = table[b * max_pages + j / kPage];
        if (page < 0) page = order[b * max_pages + j / kPage];
        at = (static_cast<size_t>(page) * kPage + j % kPage) * row;
      }
      std::copy_n(seqs[b].k.begin() + j * row, row, k.begin() + at);
      std::copy_n(seqs[b].v.begin() + j * row, row, v.begin() + at);
    }
  }

  std::vector<float> slopes = {0.5f, 0.25f, 0.125f, 0.0625f};
  sdpa::BiasDesc bias;
  bias.kind = sdpa::BiasKind::kAlibi;
  bias.causal = sdpa::CausalVariant::kLowerRight;
  bias.alibi = {slopes.data(), 0, 1};

  std::vector<float> o(q.size(), kNaN), lse(static_cast<size_t>(cu_q.back()) * kHeadsQ, kNaN);
  sdpa::AttentionProblem p;
  p.dtype = sdpa::DType::kFloat32;
  p.batch = n;
  p.heads_q = kHeadsQ;
  p.heads_kv = kHeadsKv;
  p.seqlen_q = 4;
  p.seqlen_kv = 7;
  p.head_dim = kDim;
  p.q = {q.data(), 0, kDim, kHeadsQ * kDim};
  p.o = {o.data(), 0, kDim, kHeadsQ * kDim};
  p.k = paged ? sdpa::TensorView{k.data(), kPage * static_cast<int64_t>(row), kDim, static_cast<int64_t>(row)}
              : sdpa::TensorView{k.data(), 0, kDim, static_cast<int64_t>(row)};
  p.v = p.k;
  p.v.data = v.data();
  p.lse = lse.data();
  p.scale = 0.35f;
  p.cu_seqlens_q = cu_q.data();
  p.cu_seqlens_kv = cu_kv.data();  // its differences over-count: seqused_kv gives the used keys
  p.seqused_kv = used.data();
  if (paged) {
    p.page_table = table.data();
    p.page_table_stride = max_pages;
    p.page_size = kPage;
  }
  const sdpa::Status status = sdpa::reference_forward(p, bias);
  ASSERT_TRUE(status.ok()) << status.message;

  for (int b = 0; b < n; ++b) {
    if (seqs[b].len_q == 0) continue;
    std::vector<float> want_o, want_lse;
    if (seqs[b].len_kv > 0) {
      dense_reference(seqs[b], bias, want_o, want_lse);
    } else {
      want_o.assign(seqs[b].q.size(), 0.0f);
      want_lse.assign(static_cast<size_t>(kHeadsQ) * seqs[b].len_q, -std::numeric_limits<float>::infinity());
    }
    for (int i = 0; i < seqs[b].len_q; ++i) {
      for (int h = 0; h < kHeadsQ; ++h) {
        EXPECT_EQ(lse[(cu_q[b] + i) * kHeadsQ + h], want_lse[h * seqs[b].len_q + i]) << "b=" << b << " i=" << i;
        for (int d = 0; d < kDim; ++d) {
          EXPECT_EQ(o[((cu_q[b] + i) * kHeadsQ + h) * kDim + d], want_o[(i * kHeadsQ + h) * kDim + d])
              << "b=" << b << " i=" << i << " h=" << h;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Keys, ReferenceVarlen, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "paged" : "packed"; });

}  // namespace

namespace {

// validate()'s variable-length rules, each broken alone: the message names the field to fix.
TEST(ValidateVarlen, EachBrokenRuleNamesItsField) {
  std::vector<float> data(64, 0.0f);
  std::vector<int> cu = {0, 1}, used = {1}, table = {0};
  sdpa::AttentionProblem base;
  base.dtype = sdpa::DType::kFloat32;
  base.batch = base.heads_q = base.heads_kv = base.seqlen_q = base.seqlen_kv = 1;
  base.head_dim = 8;
  base.q = base.k = base.v = base.o = {data.data(), 0, 8, 8};
  base.cu_seqlens_q = cu.data();
  base.cu_seqlens_kv = cu.data();
  ASSERT_TRUE(sdpa::validate(base, {}).ok());

  struct Broken {
    const char* field;
    void (*apply)(sdpa::AttentionProblem&);
  };
  const Broken cases[] = {
      {"cu_seqlens_kv", [](sdpa::AttentionProblem& p) { p.cu_seqlens_kv = nullptr; }},
      {"page_size", [](sdpa::AttentionProblem& p) { p.page_table = p.cu_seqlens_q; }},
      {"cu_seqlens_q", [](sdpa::AttentionProblem& p) { p.cu_seqlens_q = nullptr; }},
  };
  for (const Broken& broken : cases) {
    sdpa::AttentionProblem p = base;
    broken.apply(p);
    const sdpa::Status s = sdpa::validate(p, {});
    EXPECT_EQ(s.code, sdpa::StatusCode::kInvalidArgument) << broken.field;
    EXPECT_NE(s.message.find(broken.field), std::string::npos) << s.message;
  }
  // A paged cache needs the sequences' key lengths from seqused_kv or cu_seqlens_kv.
  sdpa::AttentionProblem paged = base;
  paged.cu_seqlens_kv = nullptr;
  paged.page_table = table.data();
  paged.page_size = 16;
  EXPECT_NE(sdpa::validate(paged, {}).message.find("seqused_kv"), std::string::npos);
  paged.seqused_kv = used.data();
  EXPECT_TRUE(sdpa::validate(paged, {}).ok());
  // A dense bias has no packed-token layout.
  sdpa::BiasDesc dense;
  dense.kind = sdpa::BiasKind::kDense;
  dense.dense.data = data.data();
  dense.dense.dtype = sdpa::DType::kFloat32;
  const sdpa::Status dense_status = sdpa::validate(base, dense);
  EXPECT_EQ(dense_status.code, sdpa::StatusCode::kInvalidArgument);
  EXPECT_NE(dense_status.message.find("bias.kind"), std::string::npos) << dense_status.message;
  // The backward takes dense batches only.
  sdpa::BackwardProblem backward;
  backward.forward = base;
  backward.forward.lse = data.data();
  backward.grad_o = backward.grad_q = backward.grad_k = backward.grad_v = base.q;
  EXPECT_NE(sdpa::validate_backward(backward, {}).message.find("variable-length"), std::string::npos);
}

}  // namespace
