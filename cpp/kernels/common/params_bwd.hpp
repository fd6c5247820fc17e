// The backward kernels' parameters, arch-free: the forward's (the backward recomputes P with the same
// ScoreMod and softmax constant, so it must see exactly what the forward saw) plus the gradients and the
// workspace. Host-compilable; kernels receive BwdParams by value as a __grid_constant__.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/params.hpp"
#include "sdpa/problem.hpp"

namespace sdpa {

// Where the backward's fp32 scratch lives inside the caller's workspace. Query rows are padded to whole
// query blocks so the kernels never predicate their accumulator rows.
struct BwdWorkspaceLayout {
  int64_t seqlen_q_padded = 0;
  std::size_t dq_accum_bytes = 0;  // (B, Hq, Sq padded, D) fp32
  std::size_t dpsum_bytes = 0;     // (B, Hq, Sq padded) fp32: rowsum(dO * O)

  static BwdWorkspaceLayout of(const AttentionProblem& p, int block_m) {
    BwdWorkspaceLayout w;
    w.seqlen_q_padded = (int64_t(p.seqlen_q) + block_m - 1) / block_m * block_m;
    const int64_t rows = int64_t(p.batch) * p.heads_q * w.seqlen_q_padded;
    w.dq_accum_bytes = std::size_t(rows) * p.head_dim * sizeof(float);
    w.dpsum_bytes = std::size_t(rows) * sizeof(float);
    return w;
  }
  std::size_t total_bytes() const { return dq_accum_bytes + dpsum_bytes; }
};

template <class BiasParams>
struct BwdParams : FwdParams<BiasParams> {
  TensorView grad_o, grad_q, grad_k, grad_v;
  TensorView grad_bias;  // data nullptr: no bias gradient wanted
  bool grad_bias_rows_aligned = false;  // 16-byte aligned rows: whole key blocks store 16 bytes at a time
  float* dq_accum = nullptr;
  float* dpsum = nullptr;
  int seqlen_q_padded = 0;
  int heads_kv = 0;
};

template <class Bias>
BwdParams<typename Bias::Params> make_bwd_params(const BackwardProblem& problem,
                                                 const typename Bias::Params& bias_params, BiasForm form,
                                                 const BwdWorkspaceLayout& layout, void* workspace) {
  BwdParams<typename Bias::Params> p;
  static_cast<FwdParams<typename Bias::Params>&>(p) = make_fwd_params<Bias>(problem.forward, bias_params, form);
  p.grad_o = problem.grad_o;
  p.grad_q = problem.grad_q;
  p.grad_k = problem.grad_k;
  p.grad_v = problem.grad_v;
  p.grad_bias = problem.grad_bias;
  const TensorView& g = problem.grad_bias;
  p.grad_bias_rows_aligned = reinterpret_cast<std::uintptr_t>(g.data) % 16 == 0 && g.stride_batch % 8 == 0 &&
                             g.stride_head % 8 == 0 && g.stride_seq % 8 == 0;
  p.dq_accum = static_cast<float*>(workspace);
  p.dpsum = reinterpret_cast<float*>(static_cast<char*>(workspace) + layout.dq_accum_bytes);
  p.seqlen_q_padded = static_cast<int>(layout.seqlen_q_padded);
  p.heads_kv = problem.forward.heads_kv;
  return p;
}

}  // namespace sdpa
