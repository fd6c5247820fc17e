// The split-KV decode kernel's parameters, arch-free: the forward's (the same scale, softmax constant and
// bias parameters) plus where the partial results go. Host-compilable; kernels receive DecodeParams by
// value as a __grid_constant__.
#pragma once

#include "common/params.hpp"
#include "common/seq_info.hpp"
#include "common/split_kv.hpp"

namespace sdpa {

template <class BiasParams>
struct DecodeParams : FwdParams<BiasParams> {
  float* o_partial = nullptr;    // SplitKvLayout's partial O, inside the caller's workspace
  float* lse_partial = nullptr;  // and its partial LSE
  SplitKvLayout layout;
  SeqLayout seq;  // variable-length batches and paged keys (SeqInfo); null pointers: the dense layout
  int heads_kv = 0;
};

}  // namespace sdpa
