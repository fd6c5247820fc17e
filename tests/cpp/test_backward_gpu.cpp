// backward() on the GPU, after forward() wrote o and lse, against reference_backward() on the host, fed the
// same 16-bit-rounded inputs, for every bias trait, dtype and head dim this build compiled, over odd sizes,
// Sq < Skv and Sq > Skv, GQA and rows with no visible key (whose dQ must be exactly 0). The gradients and
// the workspace start as NaN so an unwritten element fails. The deterministic mode must also give
// bitwise-identical gradients run to run. Combinations this build did not compile skip with
// select_backward()'s reason.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gpu_test_util.hpp"
#include "sdpa/sdpa.hpp"
#include "test_util.hpp"

namespace {

using sdpa::CausalVariant;
using sdpa::DType;
using sdpa::StatusCode;
using sdpa_test::Case;
using sdpa_test::DeviceBuffer;
using sdpa_test::HostTensor;
using sdpa_test::Layout;
using sdpa_test::Shape;

const std::vector<Shape> kShapes = {
    {1, 1, 1, 1, 1, Layout::kBHSD},
    {2, 3, 3, 17, 113, Layout::kBHSD},    // Sq < Skv
    {2, 2, 2, 113, 17, Layout::kBSHD},    // Sq > Skv: lower-right leaves the top rows empty; strided
    {1, 4, 2, 113, 257, Layout::kBSHD},   // GQA groups of 2, strided
    {1, 4, 2, 300, 128, Layout::kBHSD},   // GQA groups of 2, Sq > Skv, several blocks both ways
    {1, 2, 2, 1000, 200, Layout::kBHSD},  // many query-block steps per key block (both Q/dO stages), partial blocks
};

// ---- comparison ------------------------------------------------------------------------------------

// Of the largest |reference| element of the same gradient: the backward's errors scale with the gradient.
double tolerance(DType dtype) { return dtype == DType::kBFloat16 ? 2e-2 : 1e-2; }

// Below this largest |reference| (a gradient that is zero but for rounding, as dQ with a single key) the
// tolerance stops shrinking.
constexpr double kGradientFloor = 1e-2;

struct Gradients {
  std::vector<uint16_t> dq, dk, dv;
};

// Compares one gradient with the reference, element by element (NaN fails). Rows flagged in `empty` (the
// dQ rows of queries that see no key) must be exactly 0.
void compare_gradient(const std::string& name, const Case& c, const HostTensor& expected,
                      const std::vector<uint16_t>& got, const std::vector<bool>& empty) {
  const double limit = tolerance(c.dtype) * std::max(sdpa_test::max_abs(expected.data), kGradientFloor);
  double worst = 0;
  int failures = 0;
  auto report = [&](const std::string& what) {
    if (++failures <= 8) ADD_FAILURE() << name << " " << what;
  };
  for (int b = 0; b < expected.batch; ++b) {
    for (int h = 0; h < expected.heads; ++h) {
      for (int s = 0; s < expected.seqlen; ++s) {
        const size_t row = (static_cast<size_t>(b) * expected.heads + h) * expected.seqlen + s;
        const bool empty_row = row < empty.size() && empty[row];
        const std::string where = "b=" + std::to_string(b) + " h=" + std::to_string(h) + " s=" + std::to_string(s);
        for (int d = 0; d < expected.head_dim; ++d) {
          const float value = sdpa_test::from_half_bits(c.dtype, got[expected.offset(b, h, s) + d]);
          const float want = expected.at(b, h, s, d);
          if (empty_row) {
            if (value != 0.0f) report(where + " d=" + std::to_string(d) + ": " + std::to_string(value) + " in an empty row");
            continue;
          }
          const double err = std::fabs(static_cast<double>(value) - want);
          worst = std::max(worst, std::isnan(err) ? INFINITY : err);
          if (!(err <= limit)) report(where + " d=" + std::to_string(d) + ": " + std::to_string(value) + ", want " + std::to_string(want));
        }
      }
    }
  }
  EXPECT_EQ(failures, 0) << name << ": " << failures << " mismatches; max |got - ref| = " << worst
                         << ", allowed " << limit;
}

// ---- the test --------------------------------------------------------------------------------------

// SetUp runs forward() with lse on the case's inputs and checks a backward kernel is selected; each test
// then runs backward() as it needs.
class BackwardGpu : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (!sdpa_test::device_visible()) GTEST_SKIP() << "no CUDA device";
    const Case& c = GetParam();
    const Shape& s = c.shape;
    std::mt19937 rng(static_cast<unsigned>(std::hash<std::string>()(describe(c))));

    q_ = sdpa_test::random_tensor(s.batch, s.heads_q, s.seqlen_q, c.head_dim, s.layout, c.dtype, rng);
    k_ = sdpa_test::random_tensor(s.batch, s.heads_kv, s.seqlen_kv, c.head_dim, s.layout, c.dtype, rng);
    v_ = sdpa_test::random_tensor(s.batch, s.heads_kv, s.seqlen_kv, c.head_dim, s.layout, c.dtype, rng);
    d_o_ = sdpa_test::random_tensor(s.batch, s.heads_q, s.seqlen_q, c.head_dim, s.layout, c.dtype, rng);
    bias_ = sdpa_test::make_bias(c, rng);
    scale_ = 1.0f / std::sqrt(static_cast<float>(c.head_dim));

    // Device copies, in the same storage order so the host strides describe them too.
    inputs_ = std::make_unique<sdpa_test::DeviceInputs>(c, q_, k_, v_, bias_);
    const std::vector<uint16_t> d_o_bits = sdpa_test::to_bits(c.dtype, d_o_.data);
    o_ = std::make_unique<DeviceBuffer>(d_o_bits.size() * 2);
    lse_ = std::make_unique<DeviceBuffer>(static_cast<size_t>(s.batch) * s.heads_q * s.seqlen_q * 4);
    grad_o_ = std::make_unique<DeviceBuffer>(d_o_bits.size() * 2, d_o_bits.data());
    grad_q_ = std::make_unique<DeviceBuffer>(q_.data.size() * 2);
    grad_k_ = std::make_unique<DeviceBuffer>(k_.data.size() * 2);
    grad_v_ = std::make_unique<DeviceBuffer>(v_.data.size() * 2);
    ASSERT_CUDA(inputs_->status());
    for (const auto* buffer : {&o_, &lse_, &grad_o_, &grad_q_, &grad_k_, &grad_v_}) ASSERT_CUDA((*buffer)->status());

    problem_.forward = sdpa_test::device_problem(c, *inputs_, q_, k_, v_, *o_, d_o_, *lse_, scale_);
    problem_.grad_o = sdpa_test::device_view(*grad_o_, d_o_);
    problem_.grad_q = sdpa_test::device_view(*grad_q_, q_);
    problem_.grad_k = sdpa_test::device_view(*grad_k_, k_);
    problem_.grad_v = sdpa_test::device_view(*grad_v_, v_);

    const sdpa::KernelChoice forward_choice = sdpa::select_forward(problem_.forward, bias_.device);
    if (sdpa_test::skips(forward_choice.status)) GTEST_SKIP() << "forward: " << forward_choice.status.message;
    ASSERT_TRUE(forward_choice.status.ok()) << "forward: " << forward_choice.status.message;
    const sdpa::KernelChoice choice = sdpa::select_backward(problem_, bias_.device);
    if (sdpa_test::skips(choice.status)) GTEST_SKIP() << choice.status.message;
    ASSERT_TRUE(choice.status.ok()) << sdpa::status_code_name(choice.status.code) << ": " << choice.status.message;
    kernel_ = choice.kernel;

    const sdpa::Status status = sdpa::forward(problem_.forward, bias_.device);
    ASSERT_TRUE(status.ok()) << forward_choice.kernel << ": " << status.message;
    ASSERT_CUDA(cudaDeviceSynchronize());
  }

  // Fills the gradients and a fresh workspace with `poison` bytes (0xff is NaN in every float type), runs
  // backward() and waits for it.
  void run_backward(int poison) {
    const size_t workspace_bytes = sdpa::backward_workspace_size(problem_, bias_.device);
    const DeviceBuffer workspace(workspace_bytes);
    ASSERT_CUDA(workspace.status());
    const DeviceBuffer* poisoned[] = {&workspace, grad_q_.get(), grad_k_.get(), grad_v_.get()};
    for (const DeviceBuffer* buffer : poisoned) ASSERT_CUDA(cudaMemset(buffer->get(), poison, buffer->bytes()));
    const sdpa::Status status = sdpa::backward(problem_, bias_.device, workspace.get(), workspace_bytes);
    ASSERT_TRUE(status.ok()) << kernel_ << ": " << status.message;
    ASSERT_CUDA(cudaDeviceSynchronize());
  }

  void download(Gradients& out) const {
    const DeviceBuffer* sources[] = {grad_q_.get(), grad_k_.get(), grad_v_.get()};
    std::vector<uint16_t>* targets[] = {&out.dq, &out.dk, &out.dv};
    for (int n = 0; n < 3; ++n) {
      targets[n]->resize(sources[n]->bytes() / 2);
      ASSERT_CUDA(cudaMemcpy(targets[n]->data(), sources[n]->get(), sources[n]->bytes(), cudaMemcpyDeviceToHost));
    }
  }

  // reference_forward() then reference_backward() on the host copies (and the bias gradient into
  // `grad_bias` when given).
  struct Reference {
    HostTensor dq, dk, dv;
    std::vector<float> lse;
  };
  void run_reference(Reference& out, HostTensor* grad_bias = nullptr) const {
    const Case& c = GetParam();
    const Shape& s = c.shape;
    HostTensor o = sdpa_test::make_tensor(s.batch, s.heads_q, s.seqlen_q, c.head_dim, s.layout);
    out.dq = o;
    out.dk = k_;
    out.dv = v_;
    out.lse.assign(static_cast<size_t>(s.batch) * s.heads_q * s.seqlen_q, 0.0f);
    sdpa::BackwardProblem reference;
    reference.forward = sdpa_test::host_problem(q_, k_, v_, o, out.lse.data(), scale_);
    reference.grad_o = d_o_.view();
    reference.grad_q = out.dq.view();
    reference.grad_k = out.dk.view();
    reference.grad_v = out.dv.view();
    if (grad_bias != nullptr) reference.grad_bias = grad_bias->view();
    const sdpa::Status forward = sdpa::reference_forward(reference.forward, bias_.host);
    ASSERT_TRUE(forward.ok()) << forward.message;
    const sdpa::Status backward = sdpa::reference_backward(reference, bias_.host);
    ASSERT_TRUE(backward.ok()) << backward.message;
  }

  // The gradients against the reference; dQ rows whose forward LSE is -inf must be exactly 0.
  void expect_matches_reference(const Gradients& got) {
    const Case& c = GetParam();
    const Shape& s = c.shape;
    Reference want;
    ASSERT_NO_FATAL_FAILURE(run_reference(want));
    const HostTensor &dq = want.dq, &dk = want.dk, &dv = want.dv;
    const std::vector<float>& lse = want.lse;

    std::vector<bool> empty(lse.size());
    for (size_t row = 0; row < lse.size(); ++row) empty[row] = lse[row] == -std::numeric_limits<float>::infinity();
    if (c.trait.causal == CausalVariant::kLowerRight && s.seqlen_q > s.seqlen_kv) {
      // The case is meant to contain empty rows; make sure the reference agrees it does.
      EXPECT_TRUE(empty[0]);
    }
    compare_gradient("dq", c, dq, got.dq, empty);
    compare_gradient("dk", c, dk, got.dk, {});
    compare_gradient("dv", c, dv, got.dv, {});
  }

  HostTensor q_, k_, v_, d_o_;
  sdpa_test::BiasData bias_;
  float scale_ = 1.0f;
  std::unique_ptr<sdpa_test::DeviceInputs> inputs_;
  std::unique_ptr<DeviceBuffer> o_, lse_, grad_o_, grad_q_, grad_k_, grad_v_;
  sdpa::BackwardProblem problem_;
  std::string kernel_;
};

TEST_P(BackwardGpu, MatchesReference) {
  ASSERT_NO_FATAL_FAILURE(run_backward(0xff));
  Gradients got;
  ASSERT_NO_FATAL_FAILURE(download(got));
  expect_matches_reference(got);
}

// Two deterministic runs, each over a different poison (so an element neither writes differs too), give
// the same bits; the first also matches the reference.
TEST_P(BackwardGpu, DeterministicIsBitwiseReproducible) {
  problem_.deterministic = true;
  const sdpa::KernelChoice choice = sdpa::select_backward(problem_, bias_.device);
  if (choice.status.code == StatusCode::kUnsupported &&
      choice.status.message.find("deterministic") != std::string::npos) {
    GTEST_SKIP() << choice.status.message;
  }
  ASSERT_TRUE(choice.status.ok()) << choice.status.message;
  Gradients first, second;
  ASSERT_NO_FATAL_FAILURE(run_backward(0xff));
  ASSERT_NO_FATAL_FAILURE(download(first));
  ASSERT_NO_FATAL_FAILURE(run_backward(0x7f));
  ASSERT_NO_FATAL_FAILURE(download(second));
  const char* names[] = {"dq", "dk", "dv"};
  const std::vector<uint16_t>* firsts[] = {&first.dq, &first.dk, &first.dv};
  const std::vector<uint16_t>* seconds[] = {&second.dq, &second.dk, &second.dv};
  for (int n = 0; n < 3; ++n) {
    const size_t differing =
        std::inner_product(firsts[n]->begin(), firsts[n]->end(), seconds[n]->begin(), size_t{0}, std::plus<>(),
                           [](uint16_t x, uint16_t y) { return static_cast<size_t>(x != y); });
    EXPECT_EQ(differing, 0u) << names[n] << ": " << differing << " of " << firsts[n]->size()
                             << " elements differ between runs";
  }
  expect_matches_reference(first);
}

// A dense additive bias's gradient (dS) for every (b, h, i, j), poisoned first so that an element the
// kernel skips (a tile the causal mask removes) fails unless it is written as 0.
TEST_P(BackwardGpu, BiasGradientMatchesReference) {
  const Case& c = GetParam();
  if (c.trait.kind != sdpa::BiasKind::kDense || c.bool_mask) GTEST_SKIP() << "no bias gradient: not an additive dense bias";
  const Shape& s = c.shape;
  const HostTensor layout = sdpa_test::make_tensor(s.batch, s.heads_q, s.seqlen_q, s.seqlen_kv, Layout::kBHSD);
  const DeviceBuffer grad_bias(layout.data.size() * 2);
  ASSERT_CUDA(grad_bias.status());
  ASSERT_CUDA(cudaMemset(grad_bias.get(), 0xff, grad_bias.bytes()));
  problem_.grad_bias = sdpa_test::device_view(grad_bias, layout);
  ASSERT_NO_FATAL_FAILURE(run_backward(0xff));
  std::vector<uint16_t> got(grad_bias.bytes() / 2);
  ASSERT_CUDA(cudaMemcpy(got.data(), grad_bias.get(), grad_bias.bytes(), cudaMemcpyDeviceToHost));

  HostTensor want = layout;
  Reference unused;
  ASSERT_NO_FATAL_FAILURE(run_reference(unused, &want));
  compare_gradient("dbias", c, want, got, {});
}

INSTANTIATE_TEST_SUITE_P(AllTraits, BackwardGpu, ::testing::ValuesIn(sdpa_test::cases_for(kShapes)),
                         sdpa_test::case_name);

}  // namespace
