// forward() on variable-length batches on the GPU against reference_forward() on the host (itself checked
// against the dense oracle run per sequence, test_reference_varlen), fed the same 16-bit-rounded inputs.
// Each batch mixes sequence lengths (0 and 1 tokens, Sq < Skv, Sq > Skv), keys packed or in a shuffled
// page pool, seqused_kv shorter than each sequence's slot; unused slots and pages hold NaN, so reading one
// fails, and the output starts as NaN, so an unwritten row fails. Batches whose sequences have at most 16
// queries run the split-KV decode kernels, the others the prefill kernels. Every causal and ALiBi trait
// (dense biases have no packed-token layout), both dtypes, every head dim.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "gpu_test_util.hpp"
#include "sdpa/sdpa.hpp"
#include "test_util.hpp"

namespace {

using sdpa::DType;
using sdpa_test::DeviceBuffer;

const float kNaN = std::numeric_limits<float>::quiet_NaN();

// One batch's sequences as (query length, used key length); each sequence's key slot is 3 longer.
struct Mix {
  const char* name;
  int heads_q, heads_kv;
  std::vector<std::pair<int, int>> lengths;
};

const Mix kMixes[] = {
    // Prefill: long and short sequences, one empty on each side, Sq > Skv; GQA groups of 2.
    {"prefill", 4, 2, {{113, 300}, {0, 5}, {1, 1}, {300, 17}, {17, 0}, {64, 1000}, {200, 200}}},
    // Decode and speculative decoding (<= 16 queries each); GQA groups of 8; a sequence with no keys.
    {"decode", 8, 1, {{1, 1000}, {4, 77}, {16, 16}, {1, 0}, {0, 9}, {5, 3}, {1, 1}}},
    // Chunked prefill just past the decode limit, no GQA.
    {"chunked", 3, 3, {{17, 400}, {40, 40}, {1, 129}, {33, 1}}},
};

struct TraitSpec {
  const char* name;
  sdpa::BiasKind kind;
  sdpa::CausalVariant causal;
};
const TraitSpec kVarlenTraits[] = {
    {"NoBias", sdpa::BiasKind::kNone, sdpa::CausalVariant::kNone},
    {"CausalUpperLeft", sdpa::BiasKind::kNone, sdpa::CausalVariant::kUpperLeft},
    {"CausalLowerRight", sdpa::BiasKind::kNone, sdpa::CausalVariant::kLowerRight},
    {"Alibi", sdpa::BiasKind::kAlibi, sdpa::CausalVariant::kNone},
    {"AlibiCausalUpperLeft", sdpa::BiasKind::kAlibi, sdpa::CausalVariant::kUpperLeft},
    {"AlibiCausalLowerRight", sdpa::BiasKind::kAlibi, sdpa::CausalVariant::kLowerRight},
};

struct VarlenCase {
  TraitSpec trait;
  DType dtype;
  int head_dim;
  int page_size;  // 0: keys packed at cu_seqlens_kv
  const Mix* mix;
};

std::string describe(const VarlenCase& c) {
  std::ostringstream name;
  name << c.trait.name << "_" << (c.dtype == DType::kBFloat16 ? "bf16" : "fp16") << "_hd" << c.head_dim << "_"
       << c.mix->name << (c.page_size ? "_page" + std::to_string(c.page_size) : std::string("_packed"));
  return name.str();
}
[[maybe_unused]] void PrintTo(const VarlenCase& c, std::ostream* out) { *out << describe(c); }

std::vector<VarlenCase> varlen_cases() {
  std::vector<VarlenCase> cases;
  for (const TraitSpec& trait : kVarlenTraits)
    for (int head_dim : {64, 128, 256})
      for (const Mix& mix : kMixes)
        for (int page_size : {0, 16, 64, 256}) {
          cases.push_back({trait, DType::kBFloat16, head_dim, page_size, &mix});
          if (page_size == 0) cases.push_back({trait, DType::kFloat16, head_dim, page_size, &mix});
        }
  return cases;
}

// A batch in host memory: float values already rounded to the dtype, and the index arrays.
struct Batch {
  int n = 0, heads_q = 0, heads_kv = 0, dim = 0, max_q = 0, max_kv = 0;
  std::vector<int> cu_q{0}, cu_kv{0}, used, table;
  int page_size = 0, max_pages = 0;
  std::vector<float> q, k, v, slopes;  // q (Tq, Hq, D); k/v packed (Tk, Hkv, D) or pages (P, page, Hkv, D)
};

Batch make_batch(const VarlenCase& c, std::mt19937& rng) {
  Batch b;
  b.heads_q = c.mix->heads_q;
  b.heads_kv = c.mix->heads_kv;
  b.dim = c.head_dim;
  b.page_size = c.page_size;
  for (auto [len_q, len_kv] : c.mix->lengths) {
    b.cu_q.push_back(b.cu_q.back() + len_q);
    b.cu_kv.push_back(b.cu_kv.back() + len_kv + 3);  // spare slots: NaN, never read
    b.used.push_back(len_kv);
    b.max_q = std::max(b.max_q, len_q);
    b.max_kv = std::max(b.max_kv, len_kv);
  }
  b.n = static_cast<int>(b.used.size());
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  auto random = [&](size_t count) {
    std::vector<float> values(count);
    for (float& x : values) x = sdpa_test::round_to(c.dtype, uniform(rng));
    return values;
  };
  b.q = random(static_cast<size_t>(b.cu_q.back()) * b.heads_q * b.dim);
  const size_t row = static_cast<size_t>(b.heads_kv) * b.dim;
  const std::vector<float> k_rows = random(b.cu_kv.back() * row), v_rows = random(b.cu_kv.back() * row);
  if (c.page_size == 0) {
    b.k = k_rows;
    b.v = v_rows;
    for (int s = 0; s < b.n; ++s) {  // the spare slots
      std::fill(b.k.begin() + (b.cu_kv[s] + b.used[s]) * row, b.k.begin() + b.cu_kv[s + 1] * row, kNaN);
      std::fill(b.v.begin() + (b.cu_kv[s] + b.used[s]) * row, b.v.begin() + b.cu_kv[s + 1] * row, kNaN);
    }
  } else {
    // Pages handed out in a shuffled order from a pool with spare pages; unused entries point nowhere.
    b.max_pages = (b.max_kv + c.page_size - 1) / c.page_size + 1;
    std::vector<int> order(static_cast<size_t>(b.n) * b.max_pages + 3);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    b.table.assign(static_cast<size_t>(b.n) * b.max_pages, -1);
    b.k.assign(order.size() * c.page_size * row, kNaN);
    b.v = b.k;
    for (int s = 0; s < b.n; ++s) {
      for (int j = 0; j < b.used[s]; ++j) {
        int& page = b.table[s * b.max_pages + j / c.page_size];
        page = order[s * b.max_pages + j / c.page_size];
        const size_t at = (static_cast<size_t>(page) * c.page_size + j % c.page_size) * row;
        std::copy_n(k_rows.begin() + (b.cu_kv[s] + j) * row, row, b.k.begin() + at);
        std::copy_n(v_rows.begin() + (b.cu_kv[s] + j) * row, row, b.v.begin() + at);
      }
    }
  }
  for (int h = 0; h < b.heads_q; ++h) b.slopes.push_back(std::exp2(-8.0f * (h + 1) / b.heads_q));
  return b;
}

// The batch's problem over `q`, `k`, `v`, `o` (host or device memory) and the given index arrays.
sdpa::AttentionProblem batch_problem(const Batch& b, DType dtype, const void* q, const void* k, const void* v,
                                     void* o, float* lse, const int* cu_q, const int* cu_kv, const int* used,
                                     const int* table) {
  sdpa::AttentionProblem p;
  p.dtype = dtype;
  p.batch = b.n;
  p.heads_q = b.heads_q;
  p.heads_kv = b.heads_kv;
  p.seqlen_q = b.max_q;
  p.seqlen_kv = b.max_kv;
  p.head_dim = b.dim;
  const int64_t row_q = int64_t{b.heads_q} * b.dim, row_kv = int64_t{b.heads_kv} * b.dim;
  p.q = {q, 0, b.dim, row_q};
  p.o = {o, 0, b.dim, row_q};
  p.k = {k, b.page_size * row_kv, b.dim, row_kv};
  p.v = {v, b.page_size * row_kv, b.dim, row_kv};
  p.lse = lse;
  p.scale = 1.0f / std::sqrt(static_cast<float>(b.dim));
  p.cu_seqlens_q = cu_q;
  p.cu_seqlens_kv = cu_kv;
  p.seqused_kv = used;
  if (b.page_size) {
    p.page_table = table;
    p.page_table_stride = b.max_pages;
    p.page_size = b.page_size;
  }
  return p;
}

sdpa::BiasDesc bias_desc(const TraitSpec& trait, const float* slopes) {
  sdpa::BiasDesc bias;
  bias.kind = trait.kind;
  bias.causal = trait.causal;
  if (trait.kind == sdpa::BiasKind::kAlibi) bias.alibi = {slopes, 0, 1};
  return bias;
}

// What one GPU run of a batch wrote.
struct Result {
  std::vector<uint16_t> o;
  std::vector<float> lse;
  std::string kernel;
  std::string skip;  // why this build cannot run the batch, when it cannot
};

// Runs `b` on the GPU through the workspace overload, output, LSE and workspace poisoned with NaN first.
// False when it did not run: result.skip says why when this build lacks the kernel; otherwise a check failed.
bool run_on_gpu(const Batch& b, const VarlenCase& c, int num_splits, Result& result) {
  const std::vector<uint16_t> q = sdpa_test::to_bits(c.dtype, b.q), k = sdpa_test::to_bits(c.dtype, b.k),
                              v = sdpa_test::to_bits(c.dtype, b.v);
  const DeviceBuffer dq(q.size() * 2, q.data()), dk(k.size() * 2, k.data()), dv(v.size() * 2, v.data()),
      d_o(q.size() * 2), dlse(b.q.size() / b.dim * 4), dslopes(b.slopes.size() * 4, b.slopes.data()),
      dcu_q(b.cu_q.size() * 4, b.cu_q.data()), dcu_kv(b.cu_kv.size() * 4, b.cu_kv.data()),
      dused(b.used.size() * 4, b.used.data()), dtable(b.table.size() * 4, b.table.data());
  for (const DeviceBuffer* buffer : {&dq, &dk, &dv, &d_o, &dlse, &dslopes, &dcu_q, &dcu_kv, &dused, &dtable}) {
    EXPECT_CUDA(buffer->status());
  }
  EXPECT_CUDA(cudaMemset(d_o.get(), 0xff, d_o.bytes()));
  EXPECT_CUDA(cudaMemset(dlse.get(), 0xff, dlse.bytes()));
  sdpa::AttentionProblem p = batch_problem(
      b, c.dtype, dq.get(), dk.get(), dv.get(), d_o.get(), static_cast<float*>(dlse.get()),
      static_cast<const int*>(dcu_q.get()), static_cast<const int*>(dcu_kv.get()),
      static_cast<const int*>(dused.get()), static_cast<const int*>(dtable.get()));
  p.num_splits = num_splits;
  const sdpa::BiasDesc bias = bias_desc(c.trait, static_cast<const float*>(dslopes.get()));
  const sdpa::KernelChoice choice = sdpa::select_forward(p, bias);
  if (sdpa_test::skips(choice.status)) {
    result.skip = choice.status.message;
    return false;
  }
  EXPECT_TRUE(choice.status.ok()) << choice.status.message;
  if (!choice.status.ok()) return false;
  result.kernel = choice.kernel;
  const size_t workspace_bytes = sdpa::forward_workspace_size(p, bias);
  const DeviceBuffer workspace(workspace_bytes);
  if (workspace_bytes) EXPECT_CUDA(cudaMemset(workspace.get(), 0xff, workspace_bytes));
  const sdpa::Status status = sdpa::forward(p, bias, workspace.get(), workspace_bytes);
  EXPECT_TRUE(status.ok()) << choice.kernel << ": " << status.message;
  if (!status.ok()) return false;
  EXPECT_CUDA(cudaDeviceSynchronize());
  result.o.resize(q.size());
  result.lse.resize(dlse.bytes() / 4);
  EXPECT_CUDA(cudaMemcpy(result.o.data(), d_o.get(), d_o.bytes(), cudaMemcpyDeviceToHost));
  EXPECT_CUDA(cudaMemcpy(result.lse.data(), dlse.get(), dlse.bytes(), cudaMemcpyDeviceToHost));
  return true;
}

class VarlenGpu : public ::testing::TestWithParam<VarlenCase> {};

TEST_P(VarlenGpu, MatchesReference) {
  if (!sdpa_test::device_visible()) GTEST_SKIP() << "no CUDA device";
  const VarlenCase& c = GetParam();
  std::mt19937 rng(static_cast<unsigned>(std::hash<std::string>()(describe(c))));
  const Batch b = make_batch(c, rng);
  Result got;
  if (!run_on_gpu(b, c, 0, got)) {
    if (!got.skip.empty()) GTEST_SKIP() << got.skip;
    return;
  }
  // Which family ran: split-KV decode up to 16 queries per sequence, the prefill kernel beyond (the sm90
  // one where it is built and the GPU has it, else the sm80 one).
  const bool decode = b.max_q <= sdpa::kSplitKvMaxSeqlenQ;
  EXPECT_NE(got.kernel.find(decode ? "decode_sm80" : "fwd_sm"), std::string::npos) << got.kernel;
  if (!decode) EXPECT_EQ(got.kernel.find("decode"), std::string::npos) << got.kernel;

  std::vector<float> want_o(b.q.size(), kNaN), want_lse(got.lse.size(), kNaN);
  const sdpa::Status ref = sdpa::reference_forward(
      batch_problem(b, DType::kFloat32, b.q.data(), b.k.data(), b.v.data(), want_o.data(), want_lse.data(),
                    b.cu_q.data(), b.cu_kv.data(), b.used.data(), b.table.data()),
      bias_desc(c.trait, b.slopes.data()));
  ASSERT_TRUE(ref.ok()) << ref.message;

  const double tol = c.dtype == DType::kBFloat16 ? 2e-2 : 5e-3;  // inputs in [-1, 1]
  int failures = 0;
  double worst = 0;
  for (size_t row = 0; row < want_lse.size(); ++row) {
    const bool empty = std::isinf(want_lse[row]);
    const double lse_err = empty ? (got.lse[row] == want_lse[row] ? 0.0 : INFINITY)
                                 : std::fabs(double(got.lse[row]) - want_lse[row]) / std::max(1.0, std::fabs(double(want_lse[row])));
    if (!(lse_err <= 1e-2) && ++failures <= 8) {
      ADD_FAILURE() << "token " << row / b.heads_q << " head " << row % b.heads_q << ": lse " << got.lse[row]
                    << ", want " << want_lse[row];
    }
    for (int d = 0; d < b.dim; ++d) {
      const size_t at = row * b.dim + d;
      const double err = std::fabs(double(sdpa_test::from_half_bits(c.dtype, got.o[at])) - want_o[at]);
      worst = std::max(worst, std::isnan(err) ? INFINITY : err);
      if (!(err <= tol) && ++failures <= 8) {
        ADD_FAILURE() << "token " << row / b.heads_q << " head " << row % b.heads_q << " d " << d << ": "
                      << sdpa_test::from_half_bits(c.dtype, got.o[at]) << ", want " << want_o[at];
      }
    }
  }
  EXPECT_EQ(failures, 0) << "max |o - ref| = " << worst << " (" << got.kernel << ")";
}

INSTANTIATE_TEST_SUITE_P(Batches, VarlenGpu, ::testing::ValuesIn(varlen_cases()),
                         [](const ::testing::TestParamInfo<VarlenCase>& info) { return describe(info.param); });

// With num_splits = 1 a sequence's result does not depend on the batch around it: the decode batch run
// whole and each of its sequences run as a batch of one agree bit for bit.
TEST(VarlenGpuBatching, OneSplitIsBatchInvariant) {
  if (!sdpa_test::device_visible()) GTEST_SKIP() << "no CUDA device";
  for (const Mix& mix : {kMixes[1], kMixes[0]}) {
    const VarlenCase c{kVarlenTraits[5], DType::kBFloat16, 128, 16, &mix};
    std::mt19937 rng(11);
    const Batch whole = make_batch(c, rng);
    Result all;
    if (!run_on_gpu(whole, c, 1, all)) {
      if (!all.skip.empty()) GTEST_SKIP() << all.skip;
      return;
    }
    for (int s = 0; s < whole.n; ++s) {
      const int len_q = whole.cu_q[s + 1] - whole.cu_q[s];
      if (len_q == 0) continue;
      // Sequence s alone: its queries, and a page table of its own row (the pool is shared as is).
      Batch one = whole;
      one.n = 1;
      one.cu_q = {0, len_q};
      one.cu_kv = {0, whole.cu_kv[s + 1] - whole.cu_kv[s]};
      one.used = {whole.used[s]};
      one.max_q = len_q;
      one.max_kv = std::max(1, whole.used[s]);  // an upper bound, which validate() wants >= 1
      const size_t row_q = static_cast<size_t>(whole.heads_q) * whole.dim;
      one.q.assign(whole.q.begin() + whole.cu_q[s] * row_q, whole.q.begin() + whole.cu_q[s + 1] * row_q);
      one.table.assign(whole.table.begin() + s * whole.max_pages, whole.table.begin() + (s + 1) * whole.max_pages);
      Result alone;
      if (!run_on_gpu(one, c, 1, alone)) return;
      for (size_t at = 0; at < alone.o.size(); ++at) {
        ASSERT_EQ(alone.o[at], all.o[whole.cu_q[s] * row_q + at]) << mix.name << " sequence " << s << " element " << at;
      }
    }
  }
}

}  // namespace

namespace {

// kv_cache_append on the device writes the same bytes as the host reference, tokens crossing page borders
// and sequences with no new token included; the rest of the pool keeps its poison.
TEST(KvCacheAppendGpu, MatchesReference) {
  if (!sdpa_test::device_visible()) GTEST_SKIP() << "no CUDA device";
  struct Config {
    int heads, dim, page;
  };
  for (const Config cfg : {Config{2, 128, 16}, Config{3, 8, 5}}) {
    const int pages = 12, max_pages = 4, row = cfg.heads * cfg.dim;
    std::vector<int> table = {3, 7, 1, 0, 11, 2, 9, 4, 5, 6, 8, 10};
    const std::vector<int> lengths = {cfg.page - 1, 4, 0}, cu_new = {0, 3, 3, 2 * cfg.page + 1};
    std::mt19937 rng(cfg.dim);
    std::vector<uint16_t> k(static_cast<size_t>(cu_new.back()) * row), v(k.size());
    for (auto& x : k) x = static_cast<uint16_t>(rng());
    for (auto& x : v) x = static_cast<uint16_t>(rng());
    std::vector<uint16_t> want_k(static_cast<size_t>(pages) * cfg.page * row, 0xffff), want_v = want_k;
    std::vector<int> want_len(3, -1);

    sdpa::KvCacheAppend a;
    a.dtype = DType::kBFloat16;
    a.batch = 3;
    a.heads_kv = cfg.heads;
    a.head_dim = cfg.dim;
    a.total_new = cu_new.back();
    a.page_table_stride = max_pages;
    a.page_size = cfg.page;
    auto point = [&](sdpa::KvCacheAppend& x, void* kc, void* vc, const void* kn, const void* vn, const int* t,
                     const int* len, const int* cu, int* out) {
      x.key_cache = {kc, int64_t{cfg.page} * row, cfg.dim, row};
      x.value_cache = {vc, int64_t{cfg.page} * row, cfg.dim, row};
      x.key = {kn, 0, cfg.dim, row};
      x.value = {vn, 0, cfg.dim, row};
      x.page_table = t;
      x.cache_seqlens = len;
      x.cu_seqlens_new = cu;
      x.new_seqlens = out;
    };
    sdpa::KvCacheAppend host = a;
    point(host, want_k.data(), want_v.data(), k.data(), v.data(), table.data(), lengths.data(), cu_new.data(),
          want_len.data());
    ASSERT_TRUE(sdpa::reference_kv_cache_append(host).ok());

    const DeviceBuffer dkc(want_k.size() * 2), dvc(want_v.size() * 2), dk(k.size() * 2, k.data()),
        dv(v.size() * 2, v.data()), dt(table.size() * 4, table.data()), dl(lengths.size() * 4, lengths.data()),
        dcu(cu_new.size() * 4, cu_new.data()), dout(3 * 4);
    ASSERT_CUDA(cudaMemset(dkc.get(), 0xff, dkc.bytes()));
    ASSERT_CUDA(cudaMemset(dvc.get(), 0xff, dvc.bytes()));
    sdpa::KvCacheAppend device = a;
    point(device, dkc.get(), dvc.get(), dk.get(), dv.get(), static_cast<const int*>(dt.get()),
          static_cast<const int*>(dl.get()), static_cast<const int*>(dcu.get()), static_cast<int*>(dout.get()));
    const sdpa::Status status = sdpa::kv_cache_append(device);
    ASSERT_TRUE(status.ok()) << status.message;
    std::vector<uint16_t> got_k(want_k.size()), got_v(want_v.size());
    std::vector<int> got_len(3);
    ASSERT_CUDA(cudaMemcpy(got_k.data(), dkc.get(), dkc.bytes(), cudaMemcpyDeviceToHost));
    ASSERT_CUDA(cudaMemcpy(got_v.data(), dvc.get(), dvc.bytes(), cudaMemcpyDeviceToHost));
    ASSERT_CUDA(cudaMemcpy(got_len.data(), dout.get(), dout.bytes(), cudaMemcpyDeviceToHost));
    EXPECT_EQ(got_k, want_k) << "dim " << cfg.dim;
    EXPECT_EQ(got_v, want_v) << "dim " << cfg.dim;
    EXPECT_EQ(got_len, want_len);
  }
}

}  // namespace
