// libsdpa from plain C++: one small attention problem with an ALiBi + causal bias, forward and backward,
// computed by the host reference and, when the installed library has CUDA kernels and a device is
// visible, by the fused kernels.
#include <sdpa/sdpa.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#if DEMO_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace {

constexpr int kBatch = 1, kHeads = 2, kSeqQ = 3, kSeqKv = 5, kHeadDim = 64;

// Inputs are kept bf16-representable (the top 16 bits of an fp32), so the fp32 reference and a bf16
// kernel read exactly the same numbers and their outputs can be compared.
float to_bf16_value(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;  // round to nearest even
  std::memcpy(&f, &u, sizeof f);
  return f;
}

std::vector<float> make_input(int seqlen, float phase) {
  std::vector<float> x(static_cast<size_t>(kBatch) * kHeads * seqlen * kHeadDim);
  for (size_t n = 0; n < x.size(); ++n) x[n] = to_bf16_value(std::sin(0.1f * n + phase));
  return x;
}

// Contiguous (B, H, S, D).
sdpa::TensorView view(const void* data, int seqlen) {
  return {data, int64_t{kHeads} * seqlen * kHeadDim, int64_t{seqlen} * kHeadDim, kHeadDim};
}

sdpa::AttentionProblem make_problem(sdpa::DType dtype, const void* q, const void* k, const void* v, void* o,
                                    float* lse) {
  sdpa::AttentionProblem p;
  p.dtype = dtype;
  p.batch = kBatch;
  p.heads_q = p.heads_kv = kHeads;
  p.seqlen_q = kSeqQ;
  p.seqlen_kv = kSeqKv;
  p.head_dim = kHeadDim;
  p.q = view(q, kSeqQ);
  p.k = view(k, kSeqKv);
  p.v = view(v, kSeqKv);
  p.o = view(o, kSeqQ);
  p.lse = lse;
  p.scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
  return p;
}

sdpa::BiasDesc alibi_causal(const float* slopes) {
  sdpa::BiasDesc bias;
  bias.kind = sdpa::BiasKind::kAlibi;
  bias.causal = sdpa::CausalVariant::kUpperLeft;
  bias.alibi = {slopes, 0, 1};  // shape (H,): the same slopes for every batch
  return bias;
}

void print_rows(const std::vector<float>& o, const std::vector<float>& lse) {
  for (int h = 0; h < kHeads; ++h) {
    for (int i = 0; i < kSeqQ; ++i) {
      const float* row = &o[(static_cast<size_t>(h) * kSeqQ + i) * kHeadDim];
      std::printf("  h=%d i=%d  o[:4] = %+.4f %+.4f %+.4f %+.4f  lse = %.4f\n", h, i, row[0], row[1], row[2], row[3],
                  lse[h * kSeqQ + i]);
    }
  }
}

// dQ of the loss sum(dO * O) from the host reference (fp64 inside): the oracle for the device backward.
std::vector<float> reference_dq(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                                const std::vector<float>& d_o, const std::vector<float>& slopes) {
  std::vector<float> o(q.size()), lse(static_cast<size_t>(kBatch) * kHeads * kSeqQ), dq(q.size()), dk(k.size()),
      dv(v.size());
  sdpa::BackwardProblem p;
  p.forward = make_problem(sdpa::DType::kFloat32, q.data(), k.data(), v.data(), o.data(), lse.data());
  p.grad_o = view(d_o.data(), kSeqQ);
  p.grad_q = view(dq.data(), kSeqQ);
  p.grad_k = view(dk.data(), kSeqKv);
  p.grad_v = view(dv.data(), kSeqKv);
  const sdpa::Status status = sdpa::reference_backward(p, alibi_causal(slopes.data()));
  if (!status.ok()) std::printf("reference_backward(): %s\n", status.message.c_str());
  return dq;
}

#if DEMO_WITH_CUDA
bool device_visible() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

template <class T>
T* to_device(const std::vector<T>& host) {
  void* ptr = nullptr;
  cudaMalloc(&ptr, host.size() * sizeof(T));
  cudaMemcpy(ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
  return static_cast<T*>(ptr);
}

std::vector<uint16_t> to_bf16_bits(const std::vector<float>& x) {  // exact: x is bf16-representable
  std::vector<uint16_t> bits(x.size());
  for (size_t n = 0; n < x.size(); ++n) {
    uint32_t u;
    std::memcpy(&u, &x[n], sizeof u);
    bits[n] = static_cast<uint16_t>(u >> 16);
  }
  return bits;
}

// Runs the fused kernel on bf16 copies and prints its largest difference from the reference output.
int run_on_device(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                  const std::vector<float>& slopes, const std::vector<float>& reference_o) {
  uint16_t* dq = to_device(to_bf16_bits(q));
  uint16_t* dk = to_device(to_bf16_bits(k));
  uint16_t* dv = to_device(to_bf16_bits(v));
  float* dslopes = to_device(slopes);  // the kernel reads the slopes on the device
  std::vector<uint16_t> o_bits(reference_o.size());
  uint16_t* d_o = to_device(o_bits);
  const sdpa::AttentionProblem problem = make_problem(sdpa::DType::kBFloat16, dq, dk, dv, d_o, nullptr);
  const sdpa::Status status = sdpa::forward(problem, alibi_causal(dslopes));
  int rc = 0;
  if (!status.ok()) {
    std::printf("forward(): %s: %s\n", sdpa::status_code_name(status.code), status.message.c_str());
  } else if (cudaMemcpy(o_bits.data(), d_o, o_bits.size() * 2, cudaMemcpyDeviceToHost) != cudaSuccess) {
    std::printf("forward(): copying the output back failed\n");
    rc = 1;
  } else {
    double max_diff = 0;
    for (size_t n = 0; n < o_bits.size(); ++n) {
      uint32_t u = static_cast<uint32_t>(o_bits[n]) << 16;
      float x;
      std::memcpy(&x, &u, sizeof x);
      max_diff = std::fmax(max_diff, std::fabs(static_cast<double>(x) - reference_o[n]));
    }
    std::printf("forward() on the GPU: max |o - reference| = %.3g\n", max_diff);
    rc = max_diff <= 2e-2 ? 0 : 1;
  }
  for (void* ptr : {static_cast<void*>(dq), static_cast<void*>(dk), static_cast<void*>(dv),
                    static_cast<void*>(dslopes), static_cast<void*>(d_o)}) {
    cudaFree(ptr);
  }
  return rc;
}

float bf16_bits_to_float(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

// forward() with the LSE, then backward() with a caller-owned workspace; prints dQ's largest difference
// from the host reference.
int run_backward_on_device(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                           const std::vector<float>& d_o, const std::vector<float>& slopes,
                           const std::vector<float>& want_dq) {
  uint16_t* dq_in = to_device(to_bf16_bits(q));
  uint16_t* dk_in = to_device(to_bf16_bits(k));
  uint16_t* dv_in = to_device(to_bf16_bits(v));
  uint16_t* d_grad_o = to_device(to_bf16_bits(d_o));
  float* dslopes = to_device(slopes);
  std::vector<uint16_t> q_bits(q.size()), kv_bits(k.size());
  uint16_t* d_out = to_device(q_bits);
  uint16_t* grad_q = to_device(q_bits);
  uint16_t* grad_k = to_device(kv_bits);
  uint16_t* grad_v = to_device(kv_bits);
  float* d_lse = to_device(std::vector<float>(static_cast<size_t>(kBatch) * kHeads * kSeqQ));
  const sdpa::BiasDesc bias = alibi_causal(dslopes);
  sdpa::BackwardProblem problem;
  problem.forward = make_problem(sdpa::DType::kBFloat16, dq_in, dk_in, dv_in, d_out, d_lse);
  problem.grad_o = view(d_grad_o, kSeqQ);
  problem.grad_q = view(grad_q, kSeqQ);
  problem.grad_k = view(grad_k, kSeqKv);
  problem.grad_v = view(grad_v, kSeqKv);
  const std::size_t workspace_bytes = sdpa::backward_workspace_size(problem, bias);
  void* workspace = nullptr;
  cudaMalloc(&workspace, workspace_bytes);
  sdpa::Status status = sdpa::forward(problem.forward, bias);
  if (status.ok()) status = sdpa::backward(problem, bias, workspace, workspace_bytes);
  int rc = 0;
  if (!status.ok()) {
    std::printf("backward(): %s: %s\n", sdpa::status_code_name(status.code), status.message.c_str());
  } else if (cudaMemcpy(q_bits.data(), grad_q, q_bits.size() * 2, cudaMemcpyDeviceToHost) != cudaSuccess) {
    std::printf("backward(): copying dQ back failed\n");
    rc = 1;
  } else {
    double max_diff = 0, max_ref = 0;
    for (size_t n = 0; n < q_bits.size(); ++n) {
      max_diff = std::fmax(max_diff, std::fabs(static_cast<double>(bf16_bits_to_float(q_bits[n])) - want_dq[n]));
      max_ref = std::fmax(max_ref, std::fabs(static_cast<double>(want_dq[n])));
    }
    std::printf("backward() on the GPU (%s): max |dq - reference| = %.3g (max |dq| %.3g)\n",
                sdpa::select_backward(problem, bias).kernel.c_str(), max_diff, max_ref);
    rc = max_diff <= 2e-2 * std::fmax(max_ref, 1e-2) ? 0 : 1;
  }
  for (void* ptr : {static_cast<void*>(dq_in), static_cast<void*>(dk_in), static_cast<void*>(dv_in),
                    static_cast<void*>(d_grad_o), static_cast<void*>(dslopes), static_cast<void*>(d_out),
                    static_cast<void*>(grad_q), static_cast<void*>(grad_k), static_cast<void*>(grad_v),
                    static_cast<void*>(d_lse), workspace}) {
    cudaFree(ptr);
  }
  return rc;
}
#endif

}  // namespace

int main() {
  const std::vector<float> q = make_input(kSeqQ, 0.0f), k = make_input(kSeqKv, 1.0f), v = make_input(kSeqKv, 2.0f);
  std::vector<float> slopes(kHeads);
  for (int h = 0; h < kHeads; ++h) slopes[h] = std::exp2(-8.0f * (h + 1) / kHeads);  // the ALiBi paper's slopes

  std::vector<float> o(q.size()), lse(static_cast<size_t>(kBatch) * kHeads * kSeqQ);
  const sdpa::Status status = sdpa::reference_forward(
      make_problem(sdpa::DType::kFloat32, q.data(), k.data(), v.data(), o.data(), lse.data()),
      alibi_causal(slopes.data()));
  if (!status.ok()) {
    std::printf("reference_forward(): %s\n", status.message.c_str());
    return 1;
  }
  std::printf("reference_forward(), AlibiCausalUpperLeft, B=%d H=%d Sq=%d Skv=%d D=%d:\n", kBatch, kHeads, kSeqQ,
              kSeqKv, kHeadDim);
  print_rows(o, lse);
  std::printf("built_with_cuda() = %s, compiled_kernels().size() = %zu\n", sdpa::built_with_cuda() ? "true" : "false",
              sdpa::compiled_kernels().size());

  const std::vector<float> d_o = make_input(kSeqQ, 3.0f);
  const std::vector<float> dq = reference_dq(q, k, v, d_o, slopes);
  std::printf("reference_backward(), dO = sin(...): dq[h=0, i=2, :4] = %+.4f %+.4f %+.4f %+.4f\n",
              dq[2 * kHeadDim], dq[2 * kHeadDim + 1], dq[2 * kHeadDim + 2], dq[2 * kHeadDim + 3]);

#if DEMO_WITH_CUDA
  if (sdpa::built_with_cuda() && device_visible()) {
    const int forward_rc = run_on_device(q, k, v, slopes, o);
    return run_backward_on_device(q, k, v, d_o, slopes, dq) || forward_rc;
  }
  std::printf("no CUDA device visible: skipping forward() and backward()\n");
#endif
  return 0;
}
