// The table of compiled fused kernels. Its contents are generated (cmake/kernels.cmake).
#pragma once

#include <vector>

#include "sdpa/bias.hpp"
#include "sdpa/problem.hpp"
#include "sdpa/status.hpp"

namespace sdpa {

using FwdLaunchFn = Status (*)(const AttentionProblem&, const BiasDesc&);

struct FwdKernel {
  const char* bias_trait;  // bias_trait_name() of the biases it runs
  DType dtype;
  int head_dim;
  int min_compute_capability;  // 80 = sm_80
  const char* family;          // "fwd_sm80"
  FwdLaunchFn launch;
};

const std::vector<FwdKernel>& fwd_kernel_registry();

}  // namespace sdpa
