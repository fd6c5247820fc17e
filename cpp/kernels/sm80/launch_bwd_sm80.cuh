// Host side of the sm80 backward family: BackwardProblem + BiasDesc -> BwdParams -> three launches.
//
// Included only by the generated explicit-instantiation translation units, one per (bias, dtype, head dim).
#pragma once

#include <cstddef>
#include <string>

#include <cuda_runtime.h>

#include "bias/bias_trait.cuh"
#include "common/params.hpp"
#include "common/params_bwd.hpp"
#include "common/launch_checks.hpp"
#include "common/problem_checks.hpp"
#include "sm80/bwd_sm80.hpp"
#include "sm80/cute_element.hpp"
#include "sm80/flash_bwd_dq_kernel_sm80.cuh"
#include "sm80/flash_bwd_kernel_sm80.cuh"
#include "sm80/kernel_traits_bwd_sm80.cuh"

namespace sdpa {
namespace sm80 {

constexpr const char* kBwdFamily = "launch_bwd_sm80";

template <class Traits, class Bias, BiasForm kForm>
Status launch_bwd_kernels(const BackwardProblem& problem, const BwdParams<typename Bias::Params>& params) {
  using Element = typename Traits::Element;
  using Rows = BwdRowKernel<Traits::kHeadDim>;
  using Params = BwdParams<typename Bias::Params>;
  const AttentionProblem& fwd = problem.forward;
  cudaStream_t stream = static_cast<cudaStream_t>(fwd.stream);
  static_assert(Traits::kBlockM % Rows::kRows == 0, "the row kernels cover the padded rows exactly");

  flash_bwd_preprocess_sm80<Element, Traits::kHeadDim, Params>
      <<<dim3(params.seqlen_q_padded / Rows::kRows, fwd.heads_q, fwd.batch), Rows::kThreads, 0, stream>>>(params);
  if (Status s = launch_status(kBwdFamily, "preprocess"); !s.ok()) return s;

  const int n_blocks = (fwd.seqlen_kv + Traits::kBlockN - 1) / Traits::kBlockN;
  const dim3 dkdv_grid(n_blocks, fwd.heads_kv, fwd.batch);
  if (!problem.deterministic) {
    auto kernel = flash_bwd_dkdv_kernel_sm80<Traits, Bias, kForm, true>;
    if (Status s = allow_smem(kernel, Traits::kSmemBytes, kBwdFamily); !s.ok()) return s;
    kernel<<<dkdv_grid, Traits::kNThreads, Traits::kSmemBytes, stream>>>(params);
    if (Status s = launch_status(kBwdFamily, "dkdv"); !s.ok()) return s;
    flash_bwd_convert_dq_sm80<Element, Traits::kHeadDim, Params>
        <<<dim3((fwd.seqlen_q + Rows::kRows - 1) / Rows::kRows, fwd.heads_q, fwd.batch), Rows::kThreads, 0,
           stream>>>(params);
    return launch_status(kBwdFamily, "convert_dq");
  }
  // Deterministic: no atomics anywhere; dQ is summed over key tiles in order by its own kernel.
  auto dkdv = flash_bwd_dkdv_kernel_sm80<Traits, Bias, kForm, false>;
  if (Status s = allow_smem(dkdv, Traits::kSmemBytes, kBwdFamily); !s.ok()) return s;
  dkdv<<<dkdv_grid, Traits::kNThreads, Traits::kSmemBytes, stream>>>(params);
  if (Status s = launch_status(kBwdFamily, "dkdv"); !s.ok()) return s;
  auto dq = flash_bwd_dq_kernel_sm80<Traits, Bias, kForm>;
  constexpr int kDqSmem = bwd_dq_smem_bytes<Traits>();
  if (Status s = allow_smem(dq, kDqSmem, kBwdFamily); !s.ok()) return s;
  dq<<<dim3(params.seqlen_q_padded / Traits::kBlockM, fwd.heads_q, fwd.batch), Traits::kNThreads, kDqSmem, stream>>>(
      params);
  return launch_status(kBwdFamily, "dq");
}

template <DType kDType, int kHeadDim>
using BwdTraits = KernelTraitsBwdSm80<typename CuteElement<kDType>::type, kHeadDim>;

// The backward has no staged form: its tiles are transposed to the forward's (one key block, many query
// blocks), and the elementwise form reads the same values.
template <class Bias>
BiasForm select_bwd_bias_form(const AttentionProblem& problem, const typename Bias::Params& bias_params) {
  const BiasForm form = select_bias_form<Bias>(problem, bias_params);
  return form == BiasForm::kStaged ? BiasForm::kElementwise : form;
}

}  // namespace sm80

template <class Bias, DType kDType, int kHeadDim>
Status BwdSm80<Bias, kDType, kHeadDim>::can_implement(const BackwardProblem& problem, const BiasDesc&) {
  const AttentionProblem& fwd = problem.forward;
  if (fwd.dtype != kDType || fwd.head_dim != kHeadDim) {
    return Status::error(StatusCode::kUnsupported, "bwd_sm80: the problem's dtype or head dim is not the kernel's");
  }
  if (Status s = check_rows_16b_aligned(fwd); !s.ok()) return s;
  AttentionProblem grads = fwd;  // the gradients, checked as the operands of the same shapes
  grads.q = problem.grad_q;
  grads.o = problem.grad_o;
  grads.k = problem.grad_k;
  grads.v = problem.grad_v;
  if (Status s = check_rows_16b_aligned(grads); !s.ok()) {
    return Status::error(StatusCode::kUnsupported, "gradient " + s.message);
  }
  return Status::success();
}

template <class Bias, DType kDType, int kHeadDim>
std::size_t BwdSm80<Bias, kDType, kHeadDim>::workspace_size(const BackwardProblem& problem, const BiasDesc&) {
  return BwdWorkspaceLayout::of(problem.forward, sm80::BwdTraits<kDType, kHeadDim>::kBlockM).total_bytes();
}

template <class Bias, DType kDType, int kHeadDim>
Status BwdSm80<Bias, kDType, kHeadDim>::run(const BackwardProblem& problem, const BiasDesc& bias, void* workspace,
                                            std::size_t) {
  using Traits = sm80::BwdTraits<kDType, kHeadDim>;
  const typename Bias::Params bias_params = Bias::make_params(bias);
  const BiasForm form = sm80::select_bwd_bias_form<Bias>(problem.forward, bias_params);
  const BwdWorkspaceLayout layout = BwdWorkspaceLayout::of(problem.forward, Traits::kBlockM);
  const auto params = make_bwd_params<Bias>(problem, bias_params, form, layout, workspace);
  if constexpr (Bias::kSplittable) {
    if (form == BiasForm::kSplit) return sm80::launch_bwd_kernels<Traits, Bias, BiasForm::kSplit>(problem, params);
  }
  return sm80::launch_bwd_kernels<Traits, Bias, BiasForm::kElementwise>(problem, params);
}

}  // namespace sdpa
