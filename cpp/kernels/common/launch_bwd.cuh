// Host side every backward family shares: its preconditions, the bias form it launches, and the atomic-dQ
// launch sequence (rowsum(dO O) and zeroed accumulators, the family's dK/dV kernel, dQ's conversion).
// A family names its traits (tile sizes, thread count, smem bytes) and its mainloop; the rest is here.
#pragma once

#include <string>
#include <type_traits>

#include <cuda_runtime.h>

#include "bias/bias_trait.cuh"
#include "common/bwd_rows.cuh"
#include "common/flash_bwd_kernel.cuh"
#include "common/launch_checks.hpp"
#include "common/params.hpp"
#include "common/params_bwd.hpp"
#include "common/problem_checks.hpp"

namespace sdpa {

// A family's can_implement: the kernel's own dtype and head dim, then every operand and gradient row 16-byte
// aligned (the kernels move 16 bytes per copy).
inline Status check_backward_problem(const BackwardProblem& problem, DType dtype, int head_dim, const char* family) {
  if (problem.forward.dtype != dtype || problem.forward.head_dim != head_dim) {
    return Status::error(StatusCode::kUnsupported,
                         std::string(family) + ": the problem's dtype or head dim is not the kernel's");
  }
  if (Status s = check_rows_16b_aligned(problem.forward); !s.ok()) return s;
  AttentionProblem grads = problem.forward;  // the gradients, checked as the operands of the same shapes
  grads.q = problem.grad_q;
  grads.o = problem.grad_o;
  grads.k = problem.grad_k;
  grads.v = problem.grad_v;
  if (Status s = check_rows_16b_aligned(grads); !s.ok()) {
    return Status::error(StatusCode::kUnsupported, "gradient " + s.message);
  }
  return Status::success();
}

// The backward has no staged form: its tiles are transposed to the forward's (one key block, many query
// blocks), and the elementwise form reads the same values.
template <class Bias>
BiasForm select_bwd_bias_form(const AttentionProblem& problem, const typename Bias::Params& bias_params) {
  const BiasForm form = select_bias_form<Bias>(problem, bias_params);
  return form == BiasForm::kStaged ? BiasForm::kElementwise : form;
}

// rowsum(dO O) per query row and zeroed dQ accumulators, before any dK/dV kernel.
template <class Traits, class Params>
Status launch_bwd_preprocess(const AttentionProblem& fwd, const Params& params, const char* family) {
  using Rows = BwdRowKernel<Traits::kHeadDim>;
  static_assert(Traits::kBlockM % Rows::kRows == 0, "the row kernels cover the padded rows exactly");
  flash_bwd_preprocess<typename Traits::Element, Traits::kHeadDim, Params>
      <<<dim3(params.seqlen_q_padded / Rows::kRows, fwd.heads_q, fwd.batch), Rows::kThreads, 0,
         static_cast<cudaStream_t>(fwd.stream)>>>(params);
  return launch_status(family, "preprocess");
}

// dQ = scale * accumulator, in the input dtype, after every dK/dV block has added its part.
template <class Traits, class Params>
Status launch_bwd_convert_dq(const AttentionProblem& fwd, const Params& params, const char* family) {
  using Rows = BwdRowKernel<Traits::kHeadDim>;
  flash_bwd_convert_dq<typename Traits::Element, Traits::kHeadDim, Params>
      <<<dim3((fwd.seqlen_q + Rows::kRows - 1) / Rows::kRows, fwd.heads_q, fwd.batch), Rows::kThreads, 0,
         static_cast<cudaStream_t>(fwd.stream)>>>(params);
  return launch_status(family, "convert_dq");
}

// One dK/dV block per (key block, kv head, batch), Mainloop's walk inside.
template <class Traits, class Mainloop, class Bias, BiasForm kForm, bool kAtomicDq>
Status launch_bwd_dkdv(const AttentionProblem& fwd, const BwdParams<typename Bias::Params>& params,
                       const char* family) {
  auto kernel = flash_bwd_dkdv_kernel<Traits, Mainloop, Bias, kForm, kAtomicDq>;
  if (Status s = allow_smem(kernel, Traits::kSmemBytes, family); !s.ok()) return s;
  const int n_blocks = (fwd.seqlen_kv + Traits::kBlockN - 1) / Traits::kBlockN;
  kernel<<<dim3(n_blocks, fwd.heads_kv, fwd.batch), Traits::kNThreads, Traits::kSmemBytes,
           static_cast<cudaStream_t>(fwd.stream)>>>(params);
  return launch_status(family, "dkdv");
}

// The atomic-dQ sequence: preprocess, dK/dV (adding dQ), convert dQ.
template <class Traits, class Mainloop, class Bias, BiasForm kForm>
Status launch_bwd_atomic_dq(const AttentionProblem& fwd, const BwdParams<typename Bias::Params>& params,
                            const char* family) {
  if (Status s = launch_bwd_preprocess<Traits>(fwd, params, family); !s.ok()) return s;
  if (Status s = launch_bwd_dkdv<Traits, Mainloop, Bias, kForm, true>(fwd, params, family); !s.ok()) return s;
  return launch_bwd_convert_dq<Traits>(fwd, params, family);
}

// A family's run: the bias's parameters and form, the workspace layout and BwdParams, then
// launch(std::integral_constant<BiasForm, form>{}, params), the family's launches with the form chosen for this
// problem as a constant.
template <class Traits, class Bias, class Launch>
Status run_backward(const BackwardProblem& problem, const BiasDesc& bias, void* workspace, Launch&& launch) {
  const typename Bias::Params bias_params = Bias::make_params(bias);
  const BiasForm form = select_bwd_bias_form<Bias>(problem.forward, bias_params);
  const BwdWorkspaceLayout layout = BwdWorkspaceLayout::of(problem.forward, Traits::kBlockM);
  const auto params = make_bwd_params<Bias>(problem, bias_params, form, layout, workspace);
  if constexpr (Bias::kSplittable) {
    if (form == BiasForm::kSplit) return launch(std::integral_constant<BiasForm, BiasForm::kSplit>{}, params);
  }
  return launch(std::integral_constant<BiasForm, BiasForm::kElementwise>{}, params);
}

}  // namespace sdpa
