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
#include <memory>
#include <random>
#include <sstream>
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

#define ASSERT_CUDA(expr)                                                          \
  do {                                                                             \
    const cudaError_t err_ = (expr);                                               \
    ASSERT_EQ(err_, cudaSuccess) << #expr << ": " << cudaGetErrorString(err_);     \
  } while (0)

bool device_visible() {
  int count = 0;
  const bool ok = cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
  cudaGetLastError();  // a failed query must not leak into later calls
  return ok;
}

// Owns one cudaMalloc allocation, optionally filled from host memory; status() is the first error.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes, const void* host = nullptr) : bytes_(bytes) {
    status_ = cudaMalloc(&ptr_, bytes > 0 ? bytes : 1);
    if (status_ == cudaSuccess && host != nullptr && bytes > 0) {
      status_ = cudaMemcpy(ptr_, host, bytes, cudaMemcpyHostToDevice);
    }
  }
  ~DeviceBuffer() { cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  cudaError_t status() const { return status_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  cudaError_t status_ = cudaSuccess;
};

// ---- the cases -------------------------------------------------------------------------------------

struct TraitSpec {
  const char* name;
  BiasKind kind;
  CausalVariant causal;
};

// One case per entry of the trait list (sdpa/bias_traits.def), so a new trait is tested where it is compiled.
const TraitSpec kTraits[] = {
#define SDPA_BIAS_TRAIT(Name, Kind, Causal) {#Name, BiasKind::Kind, CausalVariant::Causal},
#include "sdpa/bias_traits.def"
#undef SDPA_BIAS_TRAIT
};

struct Shape {
  int batch, heads_q, heads_kv, seqlen_q, seqlen_kv;
  Layout layout;
};

const Shape kShapes[] = {
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

struct Case {
  TraitSpec trait;
  DType dtype;
  int head_dim;
  Shape shape;
  bool bool_mask;  // dense traits only: a bool mask instead of an additive bias
};

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (const TraitSpec& trait : kTraits) {
    for (DType dtype : {DType::kBFloat16, DType::kFloat16}) {
      for (int head_dim : {64, 128, 256}) {
        for (const Shape& shape : kShapes) {
          cases.push_back({trait, dtype, head_dim, shape, false});
          if (trait.kind == BiasKind::kDense) cases.push_back({trait, dtype, head_dim, shape, true});
        }
      }
    }
  }
  return cases;
}

std::string describe(const Case& c) {
  std::ostringstream name;
  name << c.trait.name << "_" << (c.dtype == DType::kBFloat16 ? "bf16" : "fp16") << "_hd" << c.head_dim << "_b"
       << c.shape.batch << "h" << c.shape.heads_q << "x" << c.shape.heads_kv << "_q" << c.shape.seqlen_q << "_kv"
       << c.shape.seqlen_kv << (c.shape.layout == Layout::kBSHD ? "_bshd" : "_bhsd") << (c.bool_mask ? "_mask" : "");
  return name.str();
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) { return describe(info.param); }

// How gtest prints a Case (in --gtest_list_tests and failures), instead of its raw bytes.
void PrintTo(const Case& c, std::ostream* out) { *out << describe(c); }

// ---- inputs ----------------------------------------------------------------------------------------

// Random values already rounded to `dtype`, so host and device see identical numbers.
HostTensor random_tensor(int batch, int heads, int seqlen, int head_dim, Layout layout, DType dtype, std::mt19937& rng) {
  HostTensor t = sdpa_test::make_tensor(batch, heads, seqlen, head_dim, layout);
  sdpa_test::fill_uniform(t.data, rng, -1.0f, 1.0f);
  for (float& x : t.data) x = sdpa_test::round_to(dtype, x);
  return t;
}

std::vector<uint16_t> to_bits(DType dtype, const std::vector<float>& values) {
  std::vector<uint16_t> bits(values.size());
  for (size_t n = 0; n < values.size(); ++n) bits[n] = sdpa_test::to_half_bits(dtype, values[n]);
  return bits;
}

// Host and device forms of one bias. The host form is what reference_forward() reads (fp32 or bytes).
struct BiasData {
  std::vector<float> slopes;        // (B, H)
  std::vector<float> dense_values;  // (1, H, Sq, Skv), broadcast over batch; dtype-rounded
  std::vector<unsigned char> mask;  // (B, 1, Sq, Skv), broadcast over heads
  BiasDesc host;
  BiasDesc device;  // same strides; pointers filled in once the device copies exist
};

BiasData make_bias(const Case& c, std::mt19937& rng) {
  const Shape& s = c.shape;
  BiasData data;
  data.host.kind = c.trait.kind;
  data.host.causal = c.trait.causal;
  if (c.trait.kind == BiasKind::kAlibi) {
    // The ALiBi paper's geometric slopes, varied per batch so a wrong (b, h) index shows.
    for (int b = 0; b < s.batch; ++b)
      for (int h = 0; h < s.heads_q; ++h) data.slopes.push_back(std::exp2(-8.0f * (h + 1) / s.heads_q) * (1 + 0.25f * b));
    data.host.alibi = {data.slopes.data(), s.heads_q, 1};
  } else if (c.trait.kind == BiasKind::kDense && !c.bool_mask) {
    const int64_t plane = int64_t{s.seqlen_q} * s.seqlen_kv;
    data.dense_values.resize(static_cast<size_t>(plane * s.heads_q));
    sdpa_test::fill_uniform(data.dense_values, rng, -2.0f, 2.0f);
    for (float& x : data.dense_values) x = sdpa_test::round_to(c.dtype, x);
    data.host.dense = {data.dense_values.data(), DType::kFloat32, 0, plane, s.seqlen_kv, 1};
  } else if (c.trait.kind == BiasKind::kDense) {
    const int64_t plane = int64_t{s.seqlen_q} * s.seqlen_kv;
    data.mask.resize(static_cast<size_t>(plane * s.batch));
    std::bernoulli_distribution keep(0.8);
    for (auto& m : data.mask) m = keep(rng) ? 1 : 0;
    // One row of batch 0 attends to nothing: its output must be 0 and its LSE -inf.
    const int empty_row = std::min(s.seqlen_q - 1, 3);
    std::fill_n(data.mask.begin() + int64_t{empty_row} * s.seqlen_kv, s.seqlen_kv, 0);
    data.host.dense = {data.mask.data(), DType::kBool, plane, 0, s.seqlen_kv, 1};
  }
  data.device = data.host;
  if (c.trait.kind == BiasKind::kDense && !c.bool_mask) data.device.dense.dtype = c.dtype;
  return data;
}

// ---- comparison ------------------------------------------------------------------------------------

struct Tolerance {
  double output;  // absolute, after scaling by the largest |v|
  double lse;     // absolute for |lse| <= 1, relative above
};

Tolerance tolerance(DType dtype) { return dtype == DType::kBFloat16 ? Tolerance{2e-2, 1e-2} : Tolerance{5e-3, 1e-2}; }

double max_abs(const std::vector<float>& values) {
  double m = 0;
  for (float x : values) m = std::max(m, static_cast<double>(std::fabs(x)));
  return m;
}

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
  if (!device_visible()) GTEST_SKIP() << "no CUDA device";
  const Case& c = GetParam();
  const Shape& s = c.shape;
  std::mt19937 rng(static_cast<unsigned>(std::hash<std::string>()(describe(c))));

  const HostTensor q = random_tensor(s.batch, s.heads_q, s.seqlen_q, c.head_dim, s.layout, c.dtype, rng);
  const HostTensor k = random_tensor(s.batch, s.heads_kv, s.seqlen_kv, c.head_dim, s.layout, c.dtype, rng);
  const HostTensor v = random_tensor(s.batch, s.heads_kv, s.seqlen_kv, c.head_dim, s.layout, c.dtype, rng);
  HostTensor expected_o = sdpa_test::make_tensor(s.batch, s.heads_q, s.seqlen_q, c.head_dim, s.layout);
  BiasData bias = make_bias(c, rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));

  // Device copies, in the same storage order so the host strides describe them too.
  const std::vector<uint16_t> q_bits = to_bits(c.dtype, q.data), k_bits = to_bits(c.dtype, k.data),
                              v_bits = to_bits(c.dtype, v.data), dense_bits = to_bits(c.dtype, bias.dense_values);
  const DeviceBuffer dq(q_bits.size() * 2, q_bits.data()), dk(k_bits.size() * 2, k_bits.data()),
      dv(v_bits.size() * 2, v_bits.data());
  const DeviceBuffer dslopes(bias.slopes.size() * sizeof(float), bias.slopes.data());
  const DeviceBuffer ddense(dense_bits.size() * 2, dense_bits.data()), dmask(bias.mask.size(), bias.mask.data());
  const DeviceBuffer d_o(expected_o.data.size() * 2), dlse(static_cast<size_t>(s.batch) * s.heads_q * s.seqlen_q * 4);
  for (const DeviceBuffer* buffer : {&dq, &dk, &dv, &dslopes, &ddense, &dmask, &d_o, &dlse}) {
    ASSERT_CUDA(buffer->status());
  }
  // All-ones bytes are NaN in fp16, bf16 and fp32 alike: anything the kernel does not write shows.
  ASSERT_CUDA(cudaMemset(d_o.get(), 0xff, d_o.bytes()));
  ASSERT_CUDA(cudaMemset(dlse.get(), 0xff, dlse.bytes()));
  bias.device.alibi.slopes = static_cast<const float*>(dslopes.get());
  bias.device.dense.data = c.bool_mask ? dmask.get() : ddense.get();

  sdpa::AttentionProblem problem;
  problem.dtype = c.dtype;
  problem.batch = s.batch;
  problem.heads_q = s.heads_q;
  problem.heads_kv = s.heads_kv;
  problem.seqlen_q = s.seqlen_q;
  problem.seqlen_kv = s.seqlen_kv;
  problem.head_dim = c.head_dim;
  problem.q = {dq.get(), q.stride_batch, q.stride_head, q.stride_seq};
  problem.k = {dk.get(), k.stride_batch, k.stride_head, k.stride_seq};
  problem.v = {dv.get(), v.stride_batch, v.stride_head, v.stride_seq};
  problem.o = {d_o.get(), expected_o.stride_batch, expected_o.stride_head, expected_o.stride_seq};
  problem.lse = static_cast<float*>(dlse.get());
  problem.scale = scale;

  const sdpa::KernelChoice choice = sdpa::select_forward(problem, bias.device);
  if (choice.status.code == StatusCode::kNotCompiled) GTEST_SKIP() << choice.status.message;
  if (choice.status.code == StatusCode::kUnsupported &&
      choice.status.message.find("compute capability") != std::string::npos) {
    GTEST_SKIP() << choice.status.message;
  }
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
  compare(c, expected_o, expected_lse, got_o, got_lse, std::max(max_abs(v.data), 1e-3));
}

INSTANTIATE_TEST_SUITE_P(AllTraits, ForwardGpu, ::testing::ValuesIn(all_cases()), case_name);

}  // namespace
