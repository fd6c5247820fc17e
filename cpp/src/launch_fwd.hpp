// Declarations of the fused forward launchers. Each (bias trait, dtype, head dim) combination is
// explicitly instantiated in its own generated translation unit (see cmake/kernels.cmake), so this header
// stays free of CUDA and CuTe and the registry can take the launchers' addresses from plain C++.
#pragma once

#include "sdpa/bias.hpp"
#include "sdpa/problem.hpp"
#include "sdpa/status.hpp"

namespace sdpa {

// FlashAttention-2-class forward: mma.sync tensor cores, ldmatrix, cp.async pipelining (sm80 and newer).
// Preconditions, checked by the dispatcher before it calls: validate() passed, dtype is kDType,
// head_dim == kHeadDim, the device is sm80+, pointers are 16-byte aligned and every stride but the last
// is a multiple of 8 elements.
template <class Bias, DType kDType, int kHeadDim>
Status launch_fwd_sm80(const AttentionProblem& problem, const BiasDesc& bias);

}  // namespace sdpa
