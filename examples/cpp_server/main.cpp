// A toy inference server's attention on libsdpa: three requests of different prompt lengths share a
// paged KV cache (pages of 16 tokens handed out in a shuffled order). The batch is prefilled with one
// variable-length call, then decoded for a few steps, one query per request, each step appending the new
// keys/values into the pages first. Every step's output is checked against the oracle run on each
// request alone from a contiguous copy of its keys.
//
// This build runs libsdpa's host oracle for the batched calls (reference_forward reads the same
// variable-length, paged problem description the GPU kernels read); on a device, forward() with a
// workspace takes the same AttentionProblem with device pointers.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "sdpa/sdpa.hpp"

namespace {

constexpr int kHeadsQ = 8, kHeadsKv = 2, kDim = 64, kPage = 16, kPages = 16, kMaxPagesPerRequest = 4;
constexpr int kRow = kHeadsKv * kDim;  // floats per token in the cache

// The paged cache: a pool of pages and, per request, its page table and length.
struct PagedCache {
  std::vector<float> keys, values;  // (kPages, kPage, kHeadsKv, kDim)
  std::vector<int> table;           // (requests, kMaxPagesPerRequest)
  std::vector<int> lengths;         // tokens held per request

  PagedCache(int requests, std::mt19937& rng)
      : keys(static_cast<size_t>(kPages) * kPage * kRow, NAN), values(keys), table(requests * kMaxPagesPerRequest),
        lengths(requests, 0) {
    std::vector<int> order(kPages);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    std::copy_n(order.begin(), table.size(), table.begin());
  }

  // Appends `count` tokens (rows of kRow floats) to request r: the host twin of sdpa_core.kv_cache_append.
  void append(int r, const float* k, const float* v, int count) {
    for (int t = 0; t < count; ++t, ++lengths[r]) {
      const int pos = lengths[r];
      const size_t at = (static_cast<size_t>(table[r * kMaxPagesPerRequest + pos / kPage]) * kPage + pos % kPage) * kRow;
      std::copy_n(k + t * kRow, kRow, keys.begin() + at);
      std::copy_n(v + t * kRow, kRow, values.begin() + at);
    }
  }
};

std::vector<float> random_rows(std::mt19937& rng, size_t count) {
  std::normal_distribution<float> normal;
  std::vector<float> x(count);
  for (float& value : x) value = normal(rng);
  return x;
}

// One batched step: queries (total, kHeadsQ, kDim) at cu_q against every request's cached keys.
std::vector<float> attend_batch(const PagedCache& cache, const std::vector<float>& q, const std::vector<int>& cu_q,
                                const sdpa::BiasDesc& bias) {
  const int requests = static_cast<int>(cache.lengths.size());
  std::vector<float> o(q.size(), NAN);
  sdpa::AttentionProblem p;
  p.dtype = sdpa::DType::kFloat32;
  p.batch = requests;
  p.heads_q = kHeadsQ;
  p.heads_kv = kHeadsKv;
  p.head_dim = kDim;
  p.seqlen_q = 0;
  for (int r = 0; r < requests; ++r) p.seqlen_q = std::max(p.seqlen_q, cu_q[r + 1] - cu_q[r]);
  p.seqlen_kv = *std::max_element(cache.lengths.begin(), cache.lengths.end());
  p.q = {q.data(), 0, kDim, kHeadsQ * kDim};
  p.o = {o.data(), 0, kDim, kHeadsQ * kDim};
  p.k = {cache.keys.data(), kPage * kRow, kDim, kRow};
  p.v = {cache.values.data(), kPage * kRow, kDim, kRow};
  p.scale = 1.0f / std::sqrt(static_cast<float>(kDim));
  p.cu_seqlens_q = cu_q.data();
  p.seqused_kv = cache.lengths.data();
  p.page_table = cache.table.data();
  p.page_table_stride = kMaxPagesPerRequest;
  p.page_size = kPage;
  const sdpa::Status status = sdpa::reference_forward(p, bias);
  if (!status.ok()) std::fprintf(stderr, "attention failed: %s\n", status.message.c_str());
  return o;
}

// The oracle on request r alone: its queries against a contiguous copy of its keys (dense layout, batch 1).
std::vector<float> attend_alone(const std::vector<float>& all_k, const std::vector<float>& all_v, int len_kv,
                                const float* q, int len_q, const sdpa::BiasDesc& bias) {
  std::vector<float> o(static_cast<size_t>(len_q) * kHeadsQ * kDim);
  sdpa::AttentionProblem p;
  p.dtype = sdpa::DType::kFloat32;
  p.batch = 1;
  p.heads_q = kHeadsQ;
  p.heads_kv = kHeadsKv;
  p.head_dim = kDim;
  p.seqlen_q = len_q;
  p.seqlen_kv = len_kv;
  p.q = {q, 0, kDim, kHeadsQ * kDim};
  p.o = {o.data(), 0, kDim, kHeadsQ * kDim};
  p.k = {all_k.data(), 0, kDim, kRow};
  p.v = {all_v.data(), 0, kDim, kRow};
  p.scale = 1.0f / std::sqrt(static_cast<float>(kDim));
  if (!sdpa::reference_forward(p, bias).ok()) std::fprintf(stderr, "oracle failed\n");
  return o;
}

}  // namespace

int main() {
  std::mt19937 rng(2026);
  const std::vector<int> prompt = {5, 12, 1};  // tokens per request
  const int requests = static_cast<int>(prompt.size()), decode_steps = 4;
  PagedCache cache(requests, rng);
  std::vector<std::vector<float>> history_k(requests), history_v(requests);  // contiguous copies for the oracle
  sdpa::BiasDesc causal;
  causal.causal = sdpa::CausalVariant::kLowerRight;  // each request's last query sees its last key

  double worst = 0.0;
  for (int step = 0; step <= decode_steps; ++step) {
    std::vector<int> cu_q{0};
    for (int r = 0; r < requests; ++r) cu_q.push_back(cu_q.back() + (step == 0 ? prompt[r] : 1));
    const std::vector<float> q = random_rows(rng, static_cast<size_t>(cu_q.back()) * kHeadsQ * kDim);
    for (int r = 0; r < requests; ++r) {  // the new tokens' keys and values go into the cache first
      const int count = cu_q[r + 1] - cu_q[r];
      const std::vector<float> k = random_rows(rng, static_cast<size_t>(count) * kRow), v = random_rows(rng, k.size());
      cache.append(r, k.data(), v.data(), count);
      history_k[r].insert(history_k[r].end(), k.begin(), k.end());
      history_v[r].insert(history_v[r].end(), v.begin(), v.end());
    }
    const std::vector<float> o = attend_batch(cache, q, cu_q, causal);
    for (int r = 0; r < requests; ++r) {
      const int len_q = cu_q[r + 1] - cu_q[r];
      const size_t first = static_cast<size_t>(cu_q[r]) * kHeadsQ * kDim;
      const std::vector<float> want = attend_alone(history_k[r], history_v[r], cache.lengths[r], q.data() + first, len_q, causal);
      for (size_t i = 0; i < want.size(); ++i) {
        const double err = std::fabs(static_cast<double>(o[first + i]) - want[i]);
        worst = std::isnan(err) ? INFINITY : std::max(worst, err);
      }
    }
    std::printf("step %d (%s): %d queries, cache lengths", step, step == 0 ? "prefill" : "decode", cu_q.back());
    for (int len : cache.lengths) std::printf(" %d", len);
    std::printf("\n");
  }
  std::printf("max |batched - each request alone| = %.3g over %d steps\n", worst, decode_steps + 1);
  if (!(worst <= 1e-5)) {
    std::fprintf(stderr, "FAIL: the batched paged call differs from the per-request oracle\n");
    return 1;
  }
  std::printf("OK\n");
  return 0;
}
