// What the GPU suites (forward and backward against the host oracles) share: device buffers, the cases
// (every bias trait of sdpa/bias_traits.def x dtype x head dim x shape), dtype-rounded random inputs, the
// bias in its host and device forms, and the problem over device copies of host tensors.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <ostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "sdpa/sdpa.hpp"
#include "test_util.hpp"

#define ASSERT_CUDA(expr)                                                          \
  do {                                                                             \
    const cudaError_t err_ = (expr);                                               \
    ASSERT_EQ(err_, cudaSuccess) << #expr << ": " << cudaGetErrorString(err_);     \
  } while (0)
// The same where the caller cannot return early (a helper that returns a value).
#define EXPECT_CUDA(expr)                                                          \
  do {                                                                             \
    const cudaError_t err_ = (expr);                                               \
    EXPECT_EQ(err_, cudaSuccess) << #expr << ": " << cudaGetErrorString(err_);     \
  } while (0)

namespace sdpa_test {

inline bool device_visible() {
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
  sdpa::BiasKind kind;
  sdpa::CausalVariant causal;
};

// One case per entry of the trait list (sdpa/bias_traits.def), so a new trait is tested where it is compiled.
inline const TraitSpec kTraits[] = {
#define SDPA_BIAS_TRAIT(Name, Kind, Causal) {#Name, sdpa::BiasKind::Kind, sdpa::CausalVariant::Causal},
#include "sdpa/bias_traits.def"
#undef SDPA_BIAS_TRAIT
};

struct Shape {
  int batch, heads_q, heads_kv, seqlen_q, seqlen_kv;
  Layout layout;
};

struct Case {
  TraitSpec trait;
  sdpa::DType dtype;
  int head_dim;
  Shape shape;
  bool bool_mask;  // dense traits only: a bool mask instead of an additive bias
};

// Every trait x {bf16, fp16} x head dims {64, 128, 256} x `shapes`, dense traits also with a bool mask.
inline std::vector<Case> cases_for(const std::vector<Shape>& shapes) {
  std::vector<Case> cases;
  for (const TraitSpec& trait : kTraits) {
    for (sdpa::DType dtype : {sdpa::DType::kBFloat16, sdpa::DType::kFloat16}) {
      for (int head_dim : {64, 128, 256}) {
        for (const Shape& shape : shapes) {
          cases.push_back({trait, dtype, head_dim, shape, false});
          if (trait.kind == sdpa::BiasKind::kDense) cases.push_back({trait, dtype, head_dim, shape, true});
        }
      }
    }
  }
  return cases;
}

inline std::string describe(const Case& c) {
  std::ostringstream name;
  name << c.trait.name << "_" << (c.dtype == sdpa::DType::kBFloat16 ? "bf16" : "fp16") << "_hd" << c.head_dim
       << "_b" << c.shape.batch << "h" << c.shape.heads_q << "x" << c.shape.heads_kv << "_q" << c.shape.seqlen_q
       << "_kv" << c.shape.seqlen_kv << (c.shape.layout == Layout::kBSHD ? "_bshd" : "_bhsd")
       << (c.bool_mask ? "_mask" : "");
  return name.str();
}

inline std::string case_name(const ::testing::TestParamInfo<Case>& info) { return describe(info.param); }

// How gtest prints a Case (in --gtest_list_tests and failures), instead of its raw bytes.
inline void PrintTo(const Case& c, std::ostream* out) { *out << describe(c); }

// A combination this build did not compile, or a device too old for it, skips with the dispatcher's reason.
inline bool skips(const sdpa::Status& status) {
  return status.code == sdpa::StatusCode::kNotCompiled ||
         (status.code == sdpa::StatusCode::kUnsupported &&
          status.message.find("compute capability") != std::string::npos);
}

// ---- inputs ----------------------------------------------------------------------------------------

// Random values already rounded to `dtype`, so host and device see identical numbers.
inline HostTensor random_tensor(int batch, int heads, int seqlen, int head_dim, Layout layout, sdpa::DType dtype,
                                std::mt19937& rng) {
  HostTensor t = make_tensor(batch, heads, seqlen, head_dim, layout);
  fill_uniform(t.data, rng, -1.0f, 1.0f);
  for (float& x : t.data) x = round_to(dtype, x);
  return t;
}

inline std::vector<uint16_t> to_bits(sdpa::DType dtype, const std::vector<float>& values) {
  std::vector<uint16_t> bits(values.size());
  for (size_t n = 0; n < values.size(); ++n) bits[n] = to_half_bits(dtype, values[n]);
  return bits;
}

// Host and device forms of one bias. The host form is what the reference reads (fp32 or bytes).
struct BiasData {
  std::vector<float> slopes;        // (B, H)
  std::vector<float> dense_values;  // (1, H, Sq, Skv), broadcast over batch; dtype-rounded
  std::vector<unsigned char> mask;  // (B, 1, Sq, Skv), broadcast over heads
  sdpa::BiasDesc host;
  sdpa::BiasDesc device;  // same strides; pointers filled in once the device copies exist
};

inline BiasData make_bias(const Case& c, std::mt19937& rng) {
  const Shape& s = c.shape;
  BiasData data;
  data.host.kind = c.trait.kind;
  data.host.causal = c.trait.causal;
  if (c.trait.kind == sdpa::BiasKind::kAlibi) {
    // The ALiBi paper's geometric slopes, varied per batch so a wrong (b, h) index shows.
    for (int b = 0; b < s.batch; ++b)
      for (int h = 0; h < s.heads_q; ++h) data.slopes.push_back(std::exp2(-8.0f * (h + 1) / s.heads_q) * (1 + 0.25f * b));
    data.host.alibi = {data.slopes.data(), s.heads_q, 1};
  } else if (c.trait.kind == sdpa::BiasKind::kDense && !c.bool_mask) {
    const int64_t plane = int64_t{s.seqlen_q} * s.seqlen_kv;
    data.dense_values.resize(static_cast<size_t>(plane * s.heads_q));
    fill_uniform(data.dense_values, rng, -2.0f, 2.0f);
    for (float& x : data.dense_values) x = round_to(c.dtype, x);
    data.host.dense = {data.dense_values.data(), sdpa::DType::kFloat32, 0, plane, s.seqlen_kv, 1};
  } else if (c.trait.kind == sdpa::BiasKind::kDense) {
    const int64_t plane = int64_t{s.seqlen_q} * s.seqlen_kv;
    data.mask.resize(static_cast<size_t>(plane * s.batch));
    std::bernoulli_distribution keep(0.8);
    for (auto& m : data.mask) m = keep(rng) ? 1 : 0;
    // One row of batch 0 attends to nothing: its output must be 0 and its LSE -inf.
    const int empty_row = std::min(s.seqlen_q - 1, 3);
    std::fill_n(data.mask.begin() + int64_t{empty_row} * s.seqlen_kv, s.seqlen_kv, 0);
    data.host.dense = {data.mask.data(), sdpa::DType::kBool, plane, 0, s.seqlen_kv, 1};
  }
  data.device = data.host;
  if (c.trait.kind == sdpa::BiasKind::kDense && !c.bool_mask) data.device.dense.dtype = c.dtype;
  return data;
}

// The device copies of a case's q, k, v and bias, in the host tensors' storage order so the host strides
// describe them too. Construction points `bias.device` at the copies.
struct DeviceInputs {
  std::vector<uint16_t> q_bits, k_bits, v_bits, dense_bits;
  DeviceBuffer q, k, v, slopes, dense, mask;

  DeviceInputs(const Case& c, const HostTensor& hq, const HostTensor& hk, const HostTensor& hv, BiasData& bias)
      : q_bits(to_bits(c.dtype, hq.data)),
        k_bits(to_bits(c.dtype, hk.data)),
        v_bits(to_bits(c.dtype, hv.data)),
        dense_bits(to_bits(c.dtype, bias.dense_values)),
        q(q_bits.size() * 2, q_bits.data()),
        k(k_bits.size() * 2, k_bits.data()),
        v(v_bits.size() * 2, v_bits.data()),
        slopes(bias.slopes.size() * sizeof(float), bias.slopes.data()),
        dense(dense_bits.size() * 2, dense_bits.data()),
        mask(bias.mask.size(), bias.mask.data()) {
    bias.device.alibi.slopes = static_cast<const float*>(slopes.get());
    bias.device.dense.data = c.bool_mask ? mask.get() : dense.get();
  }

  cudaError_t status() const {
    for (const DeviceBuffer* buffer : {&q, &k, &v, &slopes, &dense, &mask}) {
      if (buffer->status() != cudaSuccess) return buffer->status();
    }
    return cudaSuccess;
  }
};

// A view of device memory laid out like `host`.
inline sdpa::TensorView device_view(const DeviceBuffer& buffer, const HostTensor& host) {
  return {buffer.get(), host.stride_batch, host.stride_head, host.stride_seq};
}

// The case's problem over the device inputs, writing o (laid out like `o_layout`) and lse.
inline sdpa::AttentionProblem device_problem(const Case& c, const DeviceInputs& in, const HostTensor& q,
                                             const HostTensor& k, const HostTensor& v, const DeviceBuffer& o,
                                             const HostTensor& o_layout, const DeviceBuffer& lse, float scale) {
  sdpa::AttentionProblem problem;
  problem.dtype = c.dtype;
  problem.batch = c.shape.batch;
  problem.heads_q = c.shape.heads_q;
  problem.heads_kv = c.shape.heads_kv;
  problem.seqlen_q = c.shape.seqlen_q;
  problem.seqlen_kv = c.shape.seqlen_kv;
  problem.head_dim = c.head_dim;
  problem.q = device_view(in.q, q);
  problem.k = device_view(in.k, k);
  problem.v = device_view(in.v, v);
  problem.o = device_view(o, o_layout);
  problem.lse = static_cast<float*>(lse.get());
  problem.scale = scale;
  return problem;
}

inline double max_abs(const std::vector<float>& values) {
  double m = 0;
  for (float x : values) m = std::max(m, static_cast<double>(std::fabs(x)));
  return m;
}

}  // namespace sdpa_test
