// forward() on the GPU against reference_forward() on the host, fed the same 16-bit-rounded inputs, for
// every bias trait, dtype and head dim this build compiled, over odd sizes, Sq < Skv and Sq > Skv, GQA,
// non-contiguous layouts and rows with no visible key. The output starts as NaN so an unwritten element
// fails. Combinations this build did not compile skip with select_forward()'s reason.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
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
    {2, 3, 3, 17, 113, Layout::kBHSD},     // Sq < Skv
    {2, 2, 2, 113, 17, Layout::kBSHD},     // Sq > Skv: lower-right leaves the top rows empty; strided
    {1, 4, 2, 113, 1000, Layout::kBSHD},   // GQA, strided
    {1, 6, 2, 1000, 113, Layout::kBHSD},   // GQA groups of 3, Sq > Skv
    {1, 1, 1, 1000, 1000, Layout::kBHSD},  // many tiles both ways
    {3, 2, 1, 17, 1, Layout::kBHSD},       // a single key
    {1, 2, 2, 1, 1000, Layout::kBSHD},     // decoding: one query, many keys
    {1, 2, 2, 300, 512, Layout::kBHSD},    // 16-byte bias/mask rows: dense biases are staged in smem
};

// ---- comparison ------------------------------------------------------------------------------------

struct Tolerance {
  double output;  // absolute, after scaling by the largest |v|
  double lse;     // absolute for |lse| <= 1, relative above
};

Tolerance tolerance(DType dtype) { return dtype == DType::kBFloat16 ? Tolerance{2e-2, 1e-2} : Tolerance{5e-3, 1e-2}; }

// Compares every output element and LSE; reports the first few mismatches and the largest error.
void compare(const Case& c, const HostTensor& expected_o, const std::vector<float>& expected_lse,
             const std::vector<uint16_t>& got_o_bits, const std::vector<float>& got_lse, double v_scale) {
  const Shape& s = c.shape;
  const Tolerance tol = tolerance(c.dtype);
  double worst = 0, worst_lse = 0;
  int failures = 0;
  auto report = [&](const std::string& what) {
    if (++failures <= 8) ADD_FAILURE() << what;
  };
  for (int b = 0; b < s.batch; ++b) {
    for (int h = 0; h < s.heads_q; ++h) {
      for (int i = 0; i < s.seqlen_q; ++i) {
        const size_t row = (static_cast<size_t>(b) * s.heads_q + h) * s.seqlen_q + i;
        const std::string where = "b=" + std::to_string(b) + " h=" + std::to_string(h) + " i=" + std::to_string(i);
        const bool empty_row = expected_lse[row] == -std::numeric_limits<float>::infinity();
        if (empty_row && got_lse[row] != expected_lse[row]) report(where + ": lse " + std::to_string(got_lse[row]) + ", want -inf");
        if (!empty_row) {
          const double err = std::fabs(static_cast<double>(got_lse[row]) - expected_lse[row]);
          worst_lse = std::max(worst_lse, err);
          if (!(err <= tol.lse * std::max(1.0, std::fabs(static_cast<double>(expected_lse[row]))))) {
            report(where + ": lse " + std::to_string(got_lse[row]) + ", want " + std::to_string(expected_lse[row]));
          }
        }
        for (int d = 0; d < c.head_dim; ++d) {
          const float got = sdpa_test::from_half_bits(c.dtype, got_o_bits[expected_o.offset(b, h, i) + d]);
          const float want = expected_o.at(b, h, i, d);
          if (empty_row) {
            if (got != 0.0f) report(where + " d=" + std::to_string(d) + ": " + std::to_string(got) + " in an empty row");
            continue;
          }
          const double err = std::fabs(static_cast<double>(got) - want);  // NaN fails the test below
          worst = std::max(worst, std::isnan(err) ? INFINITY : err);
          if (!(err <= tol.output * v_scale)) {
            report(where + " d=" + std::to_string(d) + ": " + std::to_string(got) + ", want " + std::to_string(want));
          }
        }
      }
    }
  }
  EXPECT_EQ(failures, 0) << failures << " mismatches; max |o - ref| = " << worst << ", max |lse - ref| = " << worst_lse;
}

// ---- the test --------------------------------------------------------------------------------------

class ForwardGpu : public ::testing::TestWithParam<Case> {};

TEST_P(ForwardGpu, MatchesReference) {
  if (!sdpa_test::device_visible()) GTEST_SKIP() << "no CUDA device";
  const Case& c = GetParam();
  const Shape& s = c.shape;
  std::mt19937 rng(static_cast<unsigned>(std::hash<std::string>()(describe(c))));

  const HostTensor q = sdpa_test::random_tensor(s.batch, s.heads_q, s.seqlen_q, c.head_dim, s.layout, c.dtype, rng);
  const HostTensor k = sdpa_test::random_tensor(s.batch, s.heads_kv, s.seqlen_kv, c.head_dim, s.layout, c.dtype, rng);
  const HostTensor v = sdpa_test::random_tensor(s.batch, s.heads_kv, s.seqlen_kv, c.head_dim, s.layout, c.dtype, rng);
  HostTensor expected_o = sdpa_test::make_tensor(s.batch, s.heads_q, s.seqlen_q, c.head_dim, s.layout);
  sdpa_test::BiasData bias = sdpa_test::make_bias(c, rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));

  const sdpa_test::DeviceInputs inputs(c, q, k, v, bias);
  const DeviceBuffer d_o(expected_o.data.size() * 2), dlse(static_cast<size_t>(s.batch) * s.heads_q * s.seqlen_q * 4);
  ASSERT_CUDA(inputs.status());
  for (const DeviceBuffer* buffer : {&d_o, &dlse}) ASSERT_CUDA(buffer->status());
  // All-ones bytes are NaN in fp16, bf16 and fp32 alike: anything the kernel does not write shows.
  ASSERT_CUDA(cudaMemset(d_o.get(), 0xff, d_o.bytes()));
  ASSERT_CUDA(cudaMemset(dlse.get(), 0xff, dlse.bytes()));
  const sdpa::AttentionProblem problem =
      sdpa_test::device_problem(c, inputs, q, k, v, d_o, expected_o, dlse, scale);

  const sdpa::KernelChoice choice = sdpa::select_forward(problem, bias.device);
  if (sdpa_test::skips(choice.status)) GTEST_SKIP() << choice.status.message;
  ASSERT_TRUE(choice.status.ok()) << sdpa::status_code_name(choice.status.code) << ": " << choice.status.message;

  const sdpa::Status status = sdpa::forward(problem, bias.device);
  ASSERT_TRUE(status.ok()) << choice.kernel << ": " << status.message;
  ASSERT_CUDA(cudaDeviceSynchronize());

  std::vector<uint16_t> got_o(expected_o.data.size());
  std::vector<float> got_lse(static_cast<size_t>(s.batch) * s.heads_q * s.seqlen_q);
  ASSERT_CUDA(cudaMemcpy(got_o.data(), d_o.get(), d_o.bytes(), cudaMemcpyDeviceToHost));
  ASSERT_CUDA(cudaMemcpy(got_lse.data(), dlse.get(), dlse.bytes(), cudaMemcpyDeviceToHost));

  std::vector<float> expected_lse(got_lse.size());
  const sdpa::Status ref =
      sdpa::reference_forward(sdpa_test::host_problem(q, k, v, expected_o, expected_lse.data(), scale), bias.host);
  ASSERT_TRUE(ref.ok()) << ref.message;

  if (c.trait.causal == CausalVariant::kLowerRight && s.seqlen_q > s.seqlen_kv) {
    // The case is meant to contain empty rows; make sure the reference agrees it does.
    EXPECT_EQ(expected_lse[0], -std::numeric_limits<float>::infinity());
  }
  compare(c, expected_o, expected_lse, got_o, got_lse, std::max(sdpa_test::max_abs(v.data), 1e-3));
}

INSTANTIATE_TEST_SUITE_P(AllTraits, ForwardGpu, ::testing::ValuesIn(sdpa_test::cases_for(kShapes)),
                         sdpa_test::case_name);

}  // namespace
