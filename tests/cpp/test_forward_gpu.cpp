// forward() on the GPU against reference_forward() on the host, fed the same 16-bit-rounded inputs, for
// every bias trait, dtype and head dim this build compiled, over odd sizes, Sq < Skv and Sq > Skv, GQA,
// non-contiguous layouts and rows with no visible key; decode shapes (Sq <= 16) run the split-KV decode
// kernels, with libsdpa's split count and with forced ones. The output and the workspace start as NaN so
// an unwritten element fails. Combinations this build did not compile skip with select_forward()'s reason.
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
    {2, 2, 2, 130, 208, Layout::kBHSD},    // staged bias and mask tiles with a partial last key tile
    {4, 8, 2, 1000, 200, Layout::kBSHD},   // 192+ row-block tiles: a persistent block computes several
    // split-KV decode (Sq <= 16): packed GQA rows, several row blocks, Sq > Skv, many splits
    {2, 8, 2, 1, 1000, Layout::kBSHD},     // groups of 4, one packed row block
    {1, 8, 1, 4, 300, Layout::kBHSD},      // a group of 8 at 4 positions: 32 packed rows, two blocks
    {3, 4, 4, 16, 77, Layout::kBHSD},      // no GQA, 16 rows
    {1, 6, 2, 5, 3, Layout::kBSHD},        // Sq > Skv: lower-right leaves rows empty
    {1, 2, 1, 1, 5000, Layout::kBHSD},     // one block: the key range splits many ways
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

// What one forward() call wrote, and what the reference says it should have.
struct ForwardRun {
  HostTensor expected_o;
  std::vector<float> expected_lse;
  std::vector<uint16_t> got_o;
  std::vector<float> got_lse;
  double v_scale = 1.0;
  std::string kernel;
  std::string details;  // select_forward()'s account of what the kernel does
  std::string skip;  // why the case cannot run in this build, when it cannot
  size_t asked_for = 0;  // Workspace::kKept: the size the first call reported
};

// How run_case passes the workspace: none (the overload that never picks the decode family), sized first
// with forward_workspace_size(), or kept (the overload that reports the size: first with no buffer, which
// must run nothing when a buffer is needed, then with one of the reported size).
enum class Workspace { kNone, kSized, kKept };

// Runs case `c` with `num_splits` through the forward() overload `mode` names, poisoning the output, the
// LSE and the workspace first. Returns false when the case did not run: run.skip says why when this build
// cannot run it; otherwise the test has failed.

bool run_case(const Case& c, int num_splits, Workspace mode, ForwardRun& run) {
  const Shape& s = c.shape;
  std::mt19937 rng(static_cast<unsigned>(std::hash<std::string>()(describe(c))));
  const HostTensor q = sdpa_test::random_tensor(s.batch, s.heads_q, s.seqlen_q, c.head_dim, s.layout, c.dtype, rng);
  const HostTensor k = sdpa_test::random_tensor(s.batch, s.heads_kv, s.seqlen_kv, c.head_dim, s.layout, c.dtype, rng);
  const HostTensor v = sdpa_test::random_tensor(s.batch, s.heads_kv, s.seqlen_kv, c.head_dim, s.layout, c.dtype, rng);
  run.expected_o = sdpa_test::make_tensor(s.batch, s.heads_q, s.seqlen_q, c.head_dim, s.layout);
  sdpa_test::BiasData bias = sdpa_test::make_bias(c, rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));

  const sdpa_test::DeviceInputs inputs(c, q, k, v, bias);
  const DeviceBuffer d_o(run.expected_o.data.size() * 2), dlse(static_cast<size_t>(s.batch) * s.heads_q * s.seqlen_q * 4);
  EXPECT_CUDA(inputs.status());
  for (const DeviceBuffer* buffer : {&d_o, &dlse}) EXPECT_CUDA(buffer->status());
  // All-ones bytes are NaN in fp16, bf16 and fp32 alike: anything the kernel does not write shows.
  EXPECT_CUDA(cudaMemset(d_o.get(), 0xff, d_o.bytes()));
  EXPECT_CUDA(cudaMemset(dlse.get(), 0xff, dlse.bytes()));
  sdpa::AttentionProblem problem = sdpa_test::device_problem(c, inputs, q, k, v, d_o, run.expected_o, dlse, scale);
  problem.num_splits = num_splits;

  const sdpa::KernelChoice choice = sdpa::select_forward(problem, bias.device);
  if (sdpa_test::skips(choice.status)) {
    run.skip = choice.status.message;
    return false;
  }
  EXPECT_TRUE(choice.status.ok()) << sdpa::status_code_name(choice.status.code) << ": " << choice.status.message;
  if (!choice.status.ok()) return false;
  run.kernel = choice.kernel;
  run.details = choice.details;

  // The workspace too starts as NaN: a partial result the combine reads but no block wrote shows.
  size_t workspace_bytes = mode == Workspace::kSized ? sdpa::forward_workspace_size(problem, bias.device) : 0;
  if (mode == Workspace::kKept) {
    const sdpa::Status asked = sdpa::forward(problem, bias.device, nullptr, 0, &workspace_bytes);
    EXPECT_EQ(workspace_bytes, sdpa::forward_workspace_size(problem, bias.device));
    run.asked_for = workspace_bytes;
    if (workspace_bytes > 0) {
      EXPECT_EQ(asked.code, sdpa::StatusCode::kInvalidArgument) << asked.message;
      std::vector<uint16_t> untouched(run.expected_o.data.size());
      EXPECT_CUDA(cudaMemcpy(untouched.data(), d_o.get(), d_o.bytes(), cudaMemcpyDeviceToHost));
      EXPECT_EQ(untouched.front(), 0xffff) << "the refused call wrote the output";
    }
  }
  const DeviceBuffer workspace(workspace_bytes);
  EXPECT_CUDA(workspace.status());
  if (workspace_bytes) EXPECT_CUDA(cudaMemset(workspace.get(), 0xff, workspace_bytes));
  size_t needed = 0;
  const sdpa::Status status =
      mode == Workspace::kNone    ? sdpa::forward(problem, bias.device)
      : mode == Workspace::kSized ? sdpa::forward(problem, bias.device, workspace.get(), workspace_bytes)
                                  : sdpa::forward(problem, bias.device, workspace.get(), workspace_bytes, &needed);
  EXPECT_TRUE(status.ok()) << choice.kernel << ": " << status.message;
  if (!status.ok()) return false;
  EXPECT_CUDA(cudaDeviceSynchronize());

  run.got_o.resize(run.expected_o.data.size());
  run.got_lse.resize(static_cast<size_t>(s.batch) * s.heads_q * s.seqlen_q);
  EXPECT_CUDA(cudaMemcpy(run.got_o.data(), d_o.get(), d_o.bytes(), cudaMemcpyDeviceToHost));
  EXPECT_CUDA(cudaMemcpy(run.got_lse.data(), dlse.get(), dlse.bytes(), cudaMemcpyDeviceToHost));

  run.expected_lse.assign(run.got_lse.size(), 0.0f);
  const sdpa::Status ref = sdpa::reference_forward(
      sdpa_test::host_problem(q, k, v, run.expected_o, run.expected_lse.data(), scale), bias.host);
  EXPECT_TRUE(ref.ok()) << ref.message;
  run.v_scale = std::max(sdpa_test::max_abs(v.data), 1e-3);
  return ref.ok();
}

class ForwardGpu : public ::testing::TestWithParam<Case> {};

TEST_P(ForwardGpu, MatchesReference) {
  if (!sdpa_test::device_visible()) GTEST_SKIP() << "no CUDA device";
  const Case& c = GetParam();
  ForwardRun run;
  if (!run_case(c, 0, Workspace::kSized, run)) {
    if (!run.skip.empty()) GTEST_SKIP() << run.skip;
    return;
  }
  // Decode shapes take the split-KV family.
  if (c.shape.seqlen_q <= sdpa::kSplitKvMaxSeqlenQ) {
    EXPECT_EQ(run.kernel.rfind("decode_sm80", 0), 0u) << run.kernel;
  }
  // The Hopper forward says its tile and how blocks take tiles (explain() shows it).
  if (run.kernel.rfind("fwd_sm90", 0) == 0) {
    EXPECT_EQ(run.details.rfind("tiles of ", 0), 0u) << run.details;
    EXPECT_NE(run.details.find("one block per tile"), std::string::npos) << run.details;
    // A dense bias or mask whose rows are whole 16-byte units is staged by TMA (make_bias: contiguous rows).
    if (c.trait.kind == sdpa::BiasKind::kDense) {
      const bool staged = c.shape.seqlen_kv % (c.bool_mask ? 16 : 8) == 0;
      EXPECT_EQ(run.details.find("the bias comes by TMA") != std::string::npos, staged) << run.details;
    }
  }
  if (c.trait.causal == CausalVariant::kLowerRight && c.shape.seqlen_q > c.shape.seqlen_kv) {
    // The case is meant to contain empty rows; make sure the reference agrees it does.
    EXPECT_EQ(run.expected_lse[0], -std::numeric_limits<float>::infinity());
  }
  compare(c, run.expected_o, run.expected_lse, run.got_o, run.got_lse, run.v_scale);
}

INSTANTIATE_TEST_SUITE_P(AllTraits, ForwardGpu, ::testing::ValuesIn(sdpa_test::cases_for(kShapes)),
                         sdpa_test::case_name);

}  // namespace

// ---- split-KV decode: forced split counts, batch invariance, the overload without a workspace -------

Case decode_case(const char* trait, Shape shape) {
  for (const sdpa_test::TraitSpec& spec : sdpa_test::kTraits) {
    if (std::string(spec.name) == trait) return {spec, DType::kBFloat16, 128, shape, false};
  }
  ADD_FAILURE() << "no trait " << trait;
  return {};
}

class DecodeSplits : public ::testing::TestWithParam<int> {};

// Any split count gives the reference's answer: 1 (none), a few, more parts than key tiles (capped).
TEST_P(DecodeSplits, MatchReference) {
  if (!sdpa_test::device_visible()) GTEST_SKIP() << "no CUDA device";
  const Case c = decode_case("AlibiCausalLowerRight", {2, 8, 2, 3, 2000, Layout::kBSHD});
  ForwardRun run;
  if (!run_case(c, GetParam(), Workspace::kSized, run)) {
    if (!run.skip.empty()) GTEST_SKIP() << run.skip;
    return;
  }
  EXPECT_EQ(run.kernel.rfind("decode_sm80", 0), 0u) << run.kernel;
  // The forced count, capped at one key tile per part (2000 keys: 32 tiles of 64).
  const std::string parts = "key range in " + std::to_string(std::min(GetParam(), 32)) + " parts (num_splits";
  EXPECT_NE(run.details.find(parts), std::string::npos) << run.details;
  compare(c, run.expected_o, run.expected_lse, run.got_o, run.got_lse, run.v_scale);
}

INSTANTIATE_TEST_SUITE_P(Counts, DecodeSplits, ::testing::Values(1, 2, 5, 64, 100000));

// The overload a caller with a kept buffer uses: asked with none, it reports the size and runs nothing; given
// that size, it runs and matches the reference.
TEST(DecodeGpu, KeptWorkspaceOverloadReportsThenRuns) {
  if (!sdpa_test::device_visible()) GTEST_SKIP() << "no CUDA device";
  const Case c = decode_case("CausalLowerRight", {2, 8, 2, 1, 4000, Layout::kBHSD});
  ForwardRun run;
  if (!run_case(c, 0, Workspace::kKept, run)) {
    if (!run.skip.empty()) GTEST_SKIP() << run.skip;
    return;
  }
  EXPECT_GT(run.asked_for, 0u) << "a split decode case needs a workspace";
  compare(c, run.expected_o, run.expected_lse, run.got_o, run.got_lse, run.v_scale);
}

// The overload without a workspace never picks the decode family: it runs the prefill kernel, correctly.
TEST(DecodeGpu, WithoutWorkspaceRunsPrefill) {
  if (!sdpa_test::device_visible()) GTEST_SKIP() << "no CUDA device";
  const Case c = decode_case("CausalLowerRight", {2, 8, 2, 1, 700, Layout::kBHSD});
  ForwardRun run;
  if (!run_case(c, 0, Workspace::kNone, run)) {
    if (!run.skip.empty()) GTEST_SKIP() << run.skip;
    return;
  }
  compare(c, run.expected_o, run.expected_lse, run.got_o, run.got_lse, run.v_scale);
}

// With num_splits = 1 a row's result does not depend on the batch around it: batch element b of a batch
// of 3 is bitwise the same as that request alone (same data, same kernel, one part per block).
TEST(DecodeGpu, OneSplitIsBatchInvariant) {
  if (!sdpa_test::device_visible()) GTEST_SKIP() << "no CUDA device";
  ForwardRun batched;
  const Case c3 = decode_case("AlibiCausalLowerRight", {3, 8, 2, 2, 900, Layout::kBHSD});
  if (!run_case(c3, 1, Workspace::kSized, batched)) {
    if (!batched.skip.empty()) GTEST_SKIP() << batched.skip;
    return;
  }
  // The same inputs again (run_case's seed and order), run as three one-request problems into one output.
  const Shape& s = c3.shape;
  std::mt19937 rng(static_cast<unsigned>(std::hash<std::string>()(describe(c3))));
  const HostTensor q = sdpa_test::random_tensor(s.batch, s.heads_q, s.seqlen_q, c3.head_dim, s.layout, c3.dtype, rng);
  const HostTensor k = sdpa_test::random_tensor(s.batch, s.heads_kv, s.seqlen_kv, c3.head_dim, s.layout, c3.dtype, rng);
  const HostTensor v = sdpa_test::random_tensor(s.batch, s.heads_kv, s.seqlen_kv, c3.head_dim, s.layout, c3.dtype, rng);
  HostTensor o_layout = sdpa_test::make_tensor(s.batch, s.heads_q, s.seqlen_q, c3.head_dim, s.layout);
  sdpa_test::BiasData bias = sdpa_test::make_bias(c3, rng);
  const sdpa_test::DeviceInputs inputs(c3, q, k, v, bias);
  const DeviceBuffer d_o(o_layout.data.size() * 2), dlse(static_cast<size_t>(s.batch) * s.heads_q * s.seqlen_q * 4);
  ASSERT_CUDA(inputs.status());
  ASSERT_CUDA(cudaMemset(d_o.get(), 0xff, d_o.bytes()));
  const float scale = 1.0f / std::sqrt(static_cast<float>(c3.head_dim));
  const sdpa::AttentionProblem full = sdpa_test::device_problem(c3, inputs, q, k, v, d_o, o_layout, dlse, scale);
  for (int b = 0; b < s.batch; ++b) {
    sdpa::AttentionProblem one = full;
    one.batch = 1;
    one.num_splits = 1;
    one.lse = nullptr;
    auto at = [b](sdpa::TensorView view) {
      view.data = static_cast<const char*>(view.data) + b * view.stride_batch * 2;
      return view;
    };
    one.q = at(full.q);
    one.k = at(full.k);
    one.v = at(full.v);
    one.o = at(full.o);
    sdpa::BiasDesc bias_one = bias.device;
    bias_one.alibi.slopes += b * bias_one.alibi.stride_batch;
    const size_t bytes = sdpa::forward_workspace_size(one, bias_one);
    const DeviceBuffer workspace(bytes);
    ASSERT_CUDA(workspace.status());
    const sdpa::Status status = sdpa::forward(one, bias_one, workspace.get(), bytes);
    ASSERT_TRUE(status.ok()) << status.message;
    ASSERT_CUDA(cudaDeviceSynchronize());
  }
  std::vector<uint16_t> got(o_layout.data.size());
  ASSERT_CUDA(cudaMemcpy(got.data(), d_o.get(), d_o.bytes(), cudaMemcpyDeviceToHost));
  EXPECT_EQ(got, batched.got_o) << "one request at a time differs from the batch of 3 with num_splits = 1";
}
