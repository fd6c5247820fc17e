// A toy inference server's attention on libsdpa: three requests of different prompt lengths share a
// paged KV cache (pages of 16 tokens handed out in a shuffled order). The batch is prefilled with one
// variable-length call, then decoded for a few steps, one query per request; each step first appends the
// new tokens' keys and values into the pages (kv_cache_append). Every step's output is checked against
// the oracle run on each request alone from a contiguous copy of its keys.
//
// With a CUDA libsdpa and a visible GPU the server runs on the device: bf16 pools, kv_cache_append and
// forward() with a workspace (the prefill kernels for the 40-token prompt, the split-KV decode kernels for
// the decode steps). Otherwise it runs libsdpa's host versions of the same calls on fp32 pools: the
// oracle reads the same variable-length, paged problem description.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "sdpa/sdpa.hpp"

#if SERVER_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace {

constexpr int kHeadsQ = 8, kHeadsKv = 2, kDim = 128, kPage = 16, kPages = 16, kMaxPagesPerRequest = 4;
constexpr int kRow = kHeadsKv * kDim;  // values per token in the cache

// bf16 round-to-nearest-even: inputs are drawn bf16-representable, so the device (bf16 storage) and the
// fp32 oracle see the same numbers.
uint16_t to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
float from_bf16(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

std::vector<float> random_rows(std::mt19937& rng, size_t count) {
  std::normal_distribution<float> normal;
  std::vector<float> x(count);
  for (float& value : x) value = from_bf16(to_bf16(normal(rng)));
  return x;
}

// One request's tokens laid out as a server keeps them: (tokens, heads, D) rows, packed per step.
sdpa::TensorView rows(const void* data, int heads) { return {data, 0, kDim, int64_t{heads} * kDim}; }
sdpa::TensorView pool_view(const void* data) { return {data, int64_t{kPage} * kRow, kDim, kRow}; }

// What a step hands the attention backend: new tokens' keys/values and queries, packed per request.
struct Step {
  std::vector<int> cu;  // (requests + 1,) new tokens (= queries) per request
  std::vector<float> q, k, v;
  int max_q() const {
    int m = 0;
    for (size_t r = 0; r + 1 < cu.size(); ++r) m = std::max(m, cu[r + 1] - cu[r]);
    return m;
  }
};

// The problem both backends fill with their own pointers.
sdpa::AttentionProblem batch_problem(sdpa::DType dtype, int requests, int max_q, int max_kv) {
  sdpa::AttentionProblem p;
  p.dtype = dtype;
  p.batch = requests;
  p.heads_q = kHeadsQ;
  p.heads_kv = kHeadsKv;
  p.head_dim = kDim;
  p.seqlen_q = max_q;
  p.seqlen_kv = max_kv;
  p.scale = 1.0f / std::sqrt(static_cast<float>(kDim));
  p.page_table_stride = kMaxPagesPerRequest;
  p.page_size = kPage;
  return p;
}

sdpa::KvCacheAppend append_problem(sdpa::DType dtype, int requests, int total_new) {
  sdpa::KvCacheAppend a;
  a.dtype = dtype;
  a.batch = requests;
  a.heads_kv = kHeadsKv;
  a.head_dim = kDim;
  a.total_new = total_new;
  a.page_table_stride = kMaxPagesPerRequest;
  a.page_size = kPage;
  return a;
}

bool check(const sdpa::Status& status, const char* what) {
  if (!status.ok()) std::fprintf(stderr, "%s failed: %s\n", what, status.message.c_str());
  return status.ok();
}

// The host backend: fp32 pools in host memory, libsdpa's host append and oracle.
struct HostServer {
  std::vector<int> table, lengths;
  std::vector<float> keys = std::vector<float>(static_cast<size_t>(kPages) * kPage * kRow, NAN), values = keys;

  HostServer(std::vector<int> table_, int requests) : table(std::move(table_)), lengths(requests, 0) {}

  bool step(const Step& s, const sdpa::BiasDesc& bias, std::vector<float>& o) {
    const int requests = static_cast<int>(lengths.size());
    std::vector<int> grown(requests);
    sdpa::KvCacheAppend a = append_problem(sdpa::DType::kFloat32, requests, s.cu.back());
    a.key_cache = pool_view(keys.data());
    a.value_cache = pool_view(values.data());
    a.key = rows(s.k.data(), kHeadsKv);
    a.value = rows(s.v.data(), kHeadsKv);
    a.page_table = table.data();
    a.cache_seqlens = lengths.data();
    a.cu_seqlens_new = s.cu.data();
    a.new_seqlens = grown.data();
    if (!check(sdpa::reference_kv_cache_append(a), "kv_cache_append")) return false;
    lengths = grown;
    o.assign(s.q.size(), NAN);
    sdpa::AttentionProblem p = batch_problem(sdpa::DType::kFloat32, requests, s.max_q(),
                                             *std::max_element(lengths.begin(), lengths.end()));
    p.q = rows(s.q.data(), kHeadsQ);
    p.o = rows(o.data(), kHeadsQ);
    p.k = pool_view(keys.data());
    p.v = pool_view(values.data());
    p.cu_seqlens_q = s.cu.data();
    p.seqused_kv = lengths.data();
    p.page_table = table.data();
    return check(sdpa::reference_forward(p, bias), "reference_forward");
  }
};

#if SERVER_WITH_CUDA
bool cuda_ok(cudaError_t err, const char* what) {
  if (err != cudaSuccess) std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(err));
  return err == cudaSuccess;
}

// A device allocation holding a copy of host data.
struct Device {
  void* ptr = nullptr;
  size_t bytes = 0;
  explicit Device(size_t n) : bytes(n) { cuda_ok(cudaMalloc(&ptr, n ? n : 1), "cudaMalloc"); }
  ~Device() { cudaFree(ptr); }
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;
  template <class T>
  bool upload(const std::vector<T>& host) {
    return cuda_ok(cudaMemcpy(ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), "upload");
  }
};

std::vector<uint16_t> bf16_of(const std::vector<float>& x) {
  std::vector<uint16_t> h(x.size());
  std::transform(x.begin(), x.end(), h.begin(), to_bf16);
  return h;
}

// The device backend: bf16 pools on the GPU, kv_cache_append and forward() on libsdpa's kernels. The
// lengths live on the device (the append writes the next ones); a host copy sizes the grid.
struct DeviceServer {
  const int requests;
  std::vector<int> host_lengths;
  Device keys{size_t{kPages} * kPage * kRow * 2}, values{keys.bytes}, table{size_t{kPages} * 4};
  Device lengths{64}, grown{64};

  DeviceServer(const std::vector<int>& host_table, int requests_) : requests(requests_), host_lengths(requests_, 0) {
    cudaMemset(keys.ptr, 0xff, keys.bytes);  // NaN: a kernel reading an unwritten slot shows
    cudaMemset(values.ptr, 0xff, values.bytes);
    cudaMemset(lengths.ptr, 0, lengths.bytes);
    table.upload(host_table);
  }

  bool step(const Step& s, const sdpa::BiasDesc& bias, std::vector<float>& o) {
    Device k(s.k.size() * 2), v(s.v.size() * 2), q(s.q.size() * 2), out(s.q.size() * 2), cu(s.cu.size() * 4);
    if (!k.upload(bf16_of(s.k)) || !v.upload(bf16_of(s.v)) || !q.upload(bf16_of(s.q)) || !cu.upload(s.cu)) return false;
    sdpa::KvCacheAppend a = append_problem(sdpa::DType::kBFloat16, requests, s.cu.back());
    a.key_cache = pool_view(keys.ptr);
    a.value_cache = pool_view(values.ptr);
    a.key = rows(k.ptr, kHeadsKv);
    a.value = rows(v.ptr, kHeadsKv);
    a.page_table = static_cast<const int*>(table.ptr);
    a.cache_seqlens = static_cast<const int*>(lengths.ptr);
    a.cu_seqlens_new = static_cast<const int*>(cu.ptr);
    a.new_seqlens = static_cast<int*>(grown.ptr);
    if (!check(sdpa::kv_cache_append(a), "kv_cache_append")) return false;
    std::swap(lengths.ptr, grown.ptr);
    for (int r = 0; r < requests; ++r) host_lengths[r] += s.cu[r + 1] - s.cu[r];

    sdpa::AttentionProblem p = batch_problem(sdpa::DType::kBFloat16, requests, s.max_q(),
                                             *std::max_element(host_lengths.begin(), host_lengths.end()));
    p.q = rows(q.ptr, kHeadsQ);
    p.o = rows(out.ptr, kHeadsQ);
    p.k = pool_view(keys.ptr);
    p.v = pool_view(values.ptr);
    p.cu_seqlens_q = static_cast<const int*>(cu.ptr);
    p.seqused_kv = static_cast<const int*>(lengths.ptr);
    p.page_table = static_cast<const int*>(table.ptr);
    const sdpa::KernelChoice choice = sdpa::select_forward(p, bias);
    std::printf("  kernel: %s\n", choice.kernel.c_str());
    Device workspace(sdpa::forward_workspace_size(p, bias));
    if (!check(sdpa::forward(p, bias, workspace.ptr, workspace.bytes), "forward")) return false;
    std::vector<uint16_t> got(s.q.size());
    if (!cuda_ok(cudaMemcpy(got.data(), out.ptr, out.bytes, cudaMemcpyDeviceToHost), "download")) return false;
    o.resize(got.size());
    std::transform(got.begin(), got.end(), o.begin(), from_bf16);
    return true;
  }
};

bool device_usable() {
  int count = 0;
  const bool ok = sdpa::built_with_cuda() && cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
  cudaGetLastError();
  return ok;
}
#endif

// The oracle on request r alone: its queries against a contiguous copy of its keys (dense layout, batch 1).
std::vector<float> attend_alone(const std::vector<float>& all_k, const std::vector<float>& all_v, int len_kv,
                                const float* q, int len_q, const sdpa::BiasDesc& bias) {
  std::vector<float> o(static_cast<size_t>(len_q) * kHeadsQ * kDim);
  sdpa::AttentionProblem p = batch_problem(sdpa::DType::kFloat32, 1, len_q, len_kv);
  p.page_table_stride = p.page_size = 0;
  p.q = rows(q, kHeadsQ);
  p.o = rows(o.data(), kHeadsQ);
  p.k = rows(all_k.data(), kHeadsKv);
  p.v = rows(all_v.data(), kHeadsKv);
  check(sdpa::reference_forward(p, bias), "oracle");
  return o;
}

}  // namespace

int main() {
  std::mt19937 rng(2026);
  const std::vector<int> prompt = {5, 40, 1};  // tokens per request: the 40-token prompt is prefill work
  const int requests = static_cast<int>(prompt.size()), decode_steps = 4;
  std::vector<int> table(kPages);
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), rng);
  table.resize(static_cast<size_t>(requests) * kMaxPagesPerRequest);

  HostServer host(table, requests);
  bool on_device = false;
#if SERVER_WITH_CUDA
  on_device = device_usable();
  std::unique_ptr<DeviceServer> device = on_device ? std::make_unique<DeviceServer>(table, requests) : nullptr;
#endif
  std::printf("running on %s\n", on_device ? "the GPU (bf16, libsdpa's kernels)" : "the host (fp32, libsdpa's oracle)");
  std::vector<std::vector<float>> history_k(requests), history_v(requests);  // contiguous copies for the oracle
  sdpa::BiasDesc causal;
  causal.causal = sdpa::CausalVariant::kLowerRight;  // each request's last query sees its last key

  double worst = 0.0;
  std::vector<int> lengths(requests, 0);
  for (int step = 0; step <= decode_steps; ++step) {
    Step s;
    s.cu = {0};
    for (int r = 0; r < requests; ++r) s.cu.push_back(s.cu.back() + (step == 0 ? prompt[r] : 1));
    s.q = random_rows(rng, static_cast<size_t>(s.cu.back()) * kHeadsQ * kDim);
    s.k = random_rows(rng, static_cast<size_t>(s.cu.back()) * kRow);
    s.v = random_rows(rng, s.k.size());
    for (int r = 0; r < requests; ++r) {
      history_k[r].insert(history_k[r].end(), s.k.begin() + s.cu[r] * kRow, s.k.begin() + s.cu[r + 1] * kRow);
      history_v[r].insert(history_v[r].end(), s.v.begin() + s.cu[r] * kRow, s.v.begin() + s.cu[r + 1] * kRow);
      lengths[r] += s.cu[r + 1] - s.cu[r];
    }
    std::vector<float> o;
    bool ran = false;
#if SERVER_WITH_CUDA
    if (on_device) ran = device->step(s, causal, o);
#endif
    if (!on_device) ran = host.step(s, causal, o);
    if (!ran) return 1;
    for (int r = 0; r < requests; ++r) {
      const int len_q = s.cu[r + 1] - s.cu[r];
      const size_t first = static_cast<size_t>(s.cu[r]) * kHeadsQ * kDim;
      const std::vector<float> want =
          attend_alone(history_k[r], history_v[r], lengths[r], s.q.data() + first, len_q, causal);
      for (size_t i = 0; i < want.size(); ++i) {
        const double err = std::fabs(static_cast<double>(o[first + i]) - want[i]);
        worst = std::isnan(err) ? INFINITY : std::max(worst, err);
      }
    }
    std::printf("step %d (%s): %d queries, cache lengths", step, step == 0 ? "prefill" : "decode", s.cu.back());
    for (int len : lengths) std::printf(" %d", len);
    std::printf("\n");
  }
  // fp32 host calls agree with the oracle to rounding; the GPU's output is rounded to bf16 (|o| < ~3).
  const double tolerance = on_device ? 2e-2 : 1e-5;
  std::printf("max |batched - each request alone| = %.3g over %d steps (tolerance %.0e)\n", worst, decode_steps + 1,
              tolerance);
  if (!(worst <= tolerance)) {
    std::fprintf(stderr, "FAIL: the batched paged call differs from the per-request oracle\n");
    return 1;
  }
  std::printf("OK\n");
  return 0;
}
