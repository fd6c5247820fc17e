// The split-KV decode kernel's parameters, arch-free: the forward's (the same scale, softmax constant, bias
// parameters and varlen layout `seq`) plus where the partial results go. Host-compilable; kernels receive
// DecodeParams by value as a __grid_constant__.
#pragma once

#include "common/params.hpp"
#include "common/split_kv.hpp"

namespace sdpa {

template <class BiasParams>
struct DecodeParams : FwdParams<BiasParams> {
  float* o_partial = nullptr;    // SplitKvLayout's partial O, inside the caller's workspace
  float* lse_partial = nullptr;  // and its partial LSE
  SplitKvLayout layout;
  int heads_kv = 0;
};

}  // namespace sdpa
