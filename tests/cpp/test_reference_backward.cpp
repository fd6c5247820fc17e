// reference_backward() against central finite differences of reference_forward(): for the loss
// L = sum(dO * O), dL/dq, dL/dk and dL/dv are exactly what the backward computes, so each analytic gradient
// element must match (L(x + h) - L(x - h)) / 2h. The forward oracle is tested on its own
// (test_reference.cpp); this suite covers every bias kind, both causal variants, GQA, Sq != Skv both ways
// and rows with no visible key, whose gradients are zero.
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
using sdpa_test::make_tensor;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kScale = 0.5f;

struct Dims {
  int batch, heads_q, heads_kv, seqlen_q, seqlen_kv, head_dim;
};

// q, k, v and dO random in [-1, 1]; the gradients poisoned with NaN so an element the oracle forgets shows.
struct BackwardInputs {
  Dims dims;
  HostTensor q, k, v, o, d_o, dq, dk, dv;
  std::vector<float> lse;

  BackwardInputs(const Dims& s, unsigned seed)
      : dims(s),
        q(make_tensor(s.batch, s.heads_q, s.seqlen_q, s.head_dim)),
        k(make_tensor(s.batch, s.heads_kv, s.seqlen_kv, s.head_dim)),
        v(k),
        o(q),
        d_o(q),
        dq(q),
        dk(k),
        dv(k),
        lse(static_cast<size_t>(s.batch) * s.heads_q * s.seqlen_q) {
    std::mt19937 rng(seed);
    for (HostTensor* t : {&q, &k, &v, &d_o}) sdpa_test::fill_uniform(t->data, rng, -1.0f, 1.0f);
    for (HostTensor* t : {&dq, &dk, &dv}) std::fill(t->data.begin(), t->data.end(), kNaN);
  }

  sdpa::AttentionProblem forward_problem() { return sdpa_test::host_problem(q, k, v, o, lse.data(), kScale); }

  sdpa::BackwardProblem backward_problem() {
    sdpa::BackwardProblem p;
    p.forward = forward_problem();
    p.grad_o = d_o.view();
    p.grad_q = dq.view();
    p.grad_k = dk.view();
    p.grad_v = dv.view();
    return p;
  }

  // sum(dO * O) in fp64, O from reference_forward() on the current q, k, v.
  double loss(const BiasDesc& bias) {
    const sdpa::Status s = sdpa::reference_forward(forward_problem(), bias);
    EXPECT_TRUE(s.ok()) << s.message;
    double sum = 0;
    for (size_t n = 0; n < o.data.size(); ++n) sum += static_cast<double>(d_o.data[n]) * o.data[n];
    return sum;
  }
};

double max_abs(const std::vector<float>& values) {
  double m = 0;
  for (float x : values) m = std::max(m, static_cast<double>(std::fabs(x)));
  return m;
}

// Compares `grad` with the central difference of the loss over every element of `input` (same shape and
// layout, so one index serves both). The step is taken as the floats actually stored, so its own
// rounding does not count as error. The tolerance covers the O(h^2) truncation and the fp32 rounding of
// O, and is far below what a wrong term (a missing scale, rowsum(dO * O) or group sum) would give.
void expect_gradient(BackwardInputs& in, const BiasDesc& bias, HostTensor& input, const HostTensor& grad,
                     const std::string& name) {
  constexpr float kStep = 1e-2f;
  const double tolerance = 1e-3 * std::max(max_abs(grad.data), 1.0) + 1e-4;
  int failures = 0;
  for (size_t n = 0; n < input.data.size(); ++n) {
    const float original = input.data[n];
    const float up = input.data[n] = original + kStep;
    const double loss_up = in.loss(bias);
    const float down = input.data[n] = original - kStep;
    const double loss_down = in.loss(bias);
    input.data[n] = original;
    const double numeric = (loss_up - loss_down) / (static_cast<double>(up) - down);
    if (!(std::fabs(grad.data[n] - numeric) <= tolerance) && ++failures <= 8) {
      ADD_FAILURE() << name << "[" << n << "] = " << grad.data[n] << ", finite difference " << numeric;
    }
  }
  EXPECT_EQ(failures, 0) << failures << " of " << input.data.size() << " " << name << " elements off";
}

// Runs the oracle, then checks dq, dk and dv against finite differences.
void expect_matches_finite_differences(BackwardInputs& in, const BiasDesc& bias) {
  const sdpa::Status s = sdpa::reference_backward(in.backward_problem(), bias);
  ASSERT_TRUE(s.ok()) << s.message;
  expect_gradient(in, bias, in.q, in.dq, "dq");
  expect_gradient(in, bias, in.k, in.dk, "dk");
  expect_gradient(in, bias, in.v, in.dv, "dv");
}

BiasDesc causal(CausalVariant variant) {
  BiasDesc bias;
  bias.causal = variant;
  return bias;
}

TEST(ReferenceBackward, NoBiasMatchesFiniteDifferences) {
  BackwardInputs in({2, 2, 2, 5, 6, 4}, 1);
  expect_matches_finite_differences(in, {});
}

TEST(ReferenceBackward, CausalUpperLeftMatchesFiniteDifferences) {
  for (const Dims& dims : {Dims{1, 2, 2, 5, 7, 4}, Dims{1, 2, 2, 7, 5, 4}}) {
    BackwardInputs in(dims, 2);
    expect_matches_finite_differences(in, causal(CausalVariant::kUpperLeft));
  }
}

TEST(ReferenceBackward, CausalLowerRightMatchesFiniteDifferences) {
  for (const Dims& dims : {Dims{1, 2, 2, 5, 7, 4}, Dims{1, 2, 2, 7, 5, 4}}) {
    BackwardInputs in(dims, 3);
    expect_matches_finite_differences(in, causal(CausalVariant::kLowerRight));
  }
}

TEST(ReferenceBackward, AlibiCausalMatchesFiniteDifferences) {
  const Dims dims{2, 2, 2, 6, 5, 4};
  const std::vector<float> slopes = {0.5f, 0.25f, 0.75f, 0.125f};  // (B, H), distinct per (b, h)
  for (CausalVariant variant : {CausalVariant::kUpperLeft, CausalVariant::kLowerRight}) {
    BackwardInputs in(dims, 4);
    BiasDesc bias = causal(variant);
    bias.kind = BiasKind::kAlibi;
    bias.alibi = {slopes.data(), 2, 1};
    expect_matches_finite_differences(in, bias);
  }
}

// A (1, H, Sq, Skv) additive bias broadcast over batch, with one value below kMaskedBelow: that key is
// removed from its row as if by -inf.
TEST(ReferenceBackward, DenseBiasMatchesFiniteDifferences) {
  const Dims dims{2, 2, 2, 4, 6, 4};
  std::vector<float> values(static_cast<size_t>(dims.heads_q) * dims.seqlen_q * dims.seqlen_kv);
  std::mt19937 rng(5);
  sdpa_test::fill_uniform(values, rng, -2.0f, 2.0f);
  values[3] = -3.0e38f;
  BackwardInputs in(dims, 5);
  BiasDesc bias;
  bias.kind = BiasKind::kDense;
  bias.dense = {values.data(), DType::kFloat32, 0, int64_t{dims.seqlen_q} * dims.seqlen_kv, dims.seqlen_kv, 1};
  expect_matches_finite_differences(in, bias);
}

// The bias's own gradient (grad_bias, one value per (b, h, i, j)), with a causal mask: masked elements
// have gradient 0, as their finite difference says.
TEST(ReferenceBackward, DenseBiasGradientMatchesFiniteDifferences) {
  const Dims dims{2, 2, 1, 4, 6, 4};
  HostTensor values = make_tensor(dims.batch, dims.heads_q, dims.seqlen_q, dims.seqlen_kv);
  HostTensor grad_bias = values;
  std::mt19937 rng(6);
  sdpa_test::fill_uniform(values.data, rng, -2.0f, 2.0f);
  std::fill(grad_bias.data.begin(), grad_bias.data.end(), kNaN);
  BackwardInputs in(dims, 6);
  BiasDesc bias;
  bias.kind = BiasKind::kDense;
  bias.causal = CausalVariant::kUpperLeft;
  const sdpa::TensorView view = values.view();
  bias.dense = {values.data.data(), DType::kFloat32, view.stride_batch, view.stride_head, view.stride_seq, 1};
  sdpa::BackwardProblem problem = in.backward_problem();
  problem.grad_bias = grad_bias.view();
  const sdpa::Status s = sdpa::reference_backward(problem, bias);
  ASSERT_TRUE(s.ok()) << s.message;
  expect_gradient(in, bias, values, grad_bias, "dbias");
  EXPECT_EQ(grad_bias.data[5], 0.0f);  // (b 0, h 0, i 0, j 5): removed by the causal mask
}

TEST(ReferenceBackward, GradBiasNeedsAnAdditiveDenseBias) {
  BackwardInputs in({1, 1, 1, 2, 2, 4}, 7);
  HostTensor grad_bias = make_tensor(1, 1, 2, 2);
  sdpa::BackwardProblem problem = in.backward_problem();
  problem.grad_bias = grad_bias.view();
  const sdpa::Status s = sdpa::reference_backward(problem, causal(CausalVariant::kUpperLeft));
  EXPECT_EQ(s.code, StatusCode::kInvalidArgument);
  EXPECT_NE(s.message.find("grad_bias"), std::string::npos) << s.message;
}

TEST(ReferenceBackward, GroupedQueryHeadsSumIntoTheirKvHead) {
  BackwardInputs in({1, 4, 2, 5, 6, 4}, 6);
  expect_matches_finite_differences(in, causal(CausalVariant::kUpperLeft));
}

TEST(ReferenceBackward, SeqlenQAboveAndBelowSeqlenKv) {
  for (const Dims& dims : {Dims{1, 2, 1, 7, 3, 4}, Dims{1, 2, 1, 3, 7, 4}}) {
    BackwardInputs in(dims, 7);
    expect_matches_finite_differences(in, {});
  }
}

void expect_zero_row(const HostTensor& t, int b, int h, int s, const std::string& name) {
  for (int d = 0; d < t.head_dim; ++d) EXPECT_EQ(t.at(b, h, s, d), 0.0f) << name << " row " << s << " d=" << d;
}

// A bool mask whose row 2 attends to nothing and whose key 4 no row sees: that query row's dq and that
// key's dk and dv are exactly 0 (written, not left as the NaN they start as), and the rest still match.
TEST(ReferenceBackward, FullyMaskedRowsAndKeysHaveZeroGradients) {
  const Dims dims{1, 2, 2, 4, 6, 4};
  const int empty_row = 2, unseen_key = 4;
  std::vector<unsigned char> mask(static_cast<size_t>(dims.seqlen_q) * dims.seqlen_kv, 1);
  for (int j = 0; j < dims.seqlen_kv; ++j) mask[empty_row * dims.seqlen_kv + j] = 0;
  for (int i = 0; i < dims.seqlen_q; ++i) mask[i * dims.seqlen_kv + unseen_key] = 0;
  mask[1 * dims.seqlen_kv + 0] = 0;  // and one ordinary masked element
  BackwardInputs in(dims, 8);
  BiasDesc bias;
  bias.kind = BiasKind::kDense;
  bias.dense = {mask.data(), DType::kBool, 0, 0, dims.seqlen_kv, 1};
  expect_matches_finite_differences(in, bias);
  for (int h = 0; h < dims.heads_q; ++h) expect_zero_row(in.dq, 0, h, empty_row, "dq");
  for (int h = 0; h < dims.heads_kv; ++h) {
    expect_zero_row(in.dk, 0, h, unseen_key, "dk");
    expect_zero_row(in.dv, 0, h, unseen_key, "dv");
  }
}

// Lower-right causal with Sq > Skv leaves the first Sq - Skv rows without a key.
TEST(ReferenceBackward, LowerRightEmptyRowsHaveZeroDq) {
  const Dims dims{1, 2, 1, 7, 3, 4};
  BackwardInputs in(dims, 9);
  const sdpa::Status s = sdpa::reference_backward(in.backward_problem(), causal(CausalVariant::kLowerRight));
  ASSERT_TRUE(s.ok()) << s.message;
  for (int h = 0; h < dims.heads_q; ++h) {
    for (int i = 0; i < dims.seqlen_q - dims.seqlen_kv; ++i) expect_zero_row(in.dq, 0, h, i, "dq");
  }
  for (float x : in.dk.data) EXPECT_TRUE(std::isfinite(x));
  for (float x : in.dv.data) EXPECT_TRUE(std::isfinite(x));
}

// With one key the softmax weight is 1 whatever the score: dv = sum of dO over the group's rows, and no
// gradient reaches q or k.
TEST(ReferenceBackward, SingleKeyByHand) {
  const Dims dims{1, 2, 1, 3, 1, 4};
  BackwardInputs in(dims, 10);
  const sdpa::Status s = sdpa::reference_backward(in.backward_problem(), {});
  ASSERT_TRUE(s.ok()) << s.message;
  for (int d = 0; d < dims.head_dim; ++d) {
    double sum = 0;
    for (int h = 0; h < dims.heads_q; ++h)
      for (int i = 0; i < dims.seqlen_q; ++i) sum += in.d_o.at(0, h, i, d);
    EXPECT_NEAR(in.dv.at(0, 0, 0, d), sum, 1e-6);
    EXPECT_NEAR(in.dk.at(0, 0, 0, d), 0.0, 1e-6);
  }
  for (float x : in.dq.data) EXPECT_NEAR(x, 0.0, 1e-6);
}

void expect_invalid(const sdpa::BackwardProblem& p, const BiasDesc& bias, const std::string& field) {
  const sdpa::Status s = sdpa::reference_backward(p, bias);
  EXPECT_EQ(s.code, StatusCode::kInvalidArgument) << field;
  EXPECT_NE(s.message.find(field), std::string::npos) << "message should name " << field << ": " << s.message;
}

TEST(ReferenceBackward, RejectsBadArgumentsNamingTheField) {
  BackwardInputs in({1, 2, 1, 2, 2, 4}, 11);
  const sdpa::BackwardProblem good = in.backward_problem();
  sdpa::BackwardProblem p = good;
  p.forward.dtype = DType::kBFloat16;
  expect_invalid(p, {}, "dtype");
  p = good;
  p.forward.lse = nullptr;
  expect_invalid(p, {}, "lse");
  p = good;
  p.grad_k.data = nullptr;
  expect_invalid(p, {}, "grad_k.data");
  const std::vector<uint16_t> half_bias(4, 0);
  BiasDesc dense;
  dense.kind = BiasKind::kDense;
  dense.dense = {half_bias.data(), DType::kFloat16, 0, 0, 2, 1};
  p = good;
  p.forward.dtype = DType::kFloat32;
  expect_invalid(p, dense, "dense.dtype");
}

}  // namespace
