// The CuTe element type of each libsdpa DType the kernels read.
#pragma once

#include <cutlass/numeric_types.h>

#include "sdpa/dtype.hpp"

namespace sdpa {

template <DType kDType>
struct CuteElement;
template <>
struct CuteElement<DType::kFloat16> {
  using type = cutlass::half_t;
};
template <>
struct CuteElement<DType::kBFloat16> {
  using type = cutlass::bfloat16_t;
};

}  // namespace sdpa
