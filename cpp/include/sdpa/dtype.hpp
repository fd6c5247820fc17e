// Element types libsdpa understands. Plain enum so the public API stays free of CUDA and CuTe types.
#pragma once

#include <cstddef>

namespace sdpa {

enum class DType : int {
  kFloat16 = 0,
  kBFloat16 = 1,
  kFloat32 = 2,  // host reference only; no fused kernel reads fp32 Q/K/V
  kBool = 3,     // dense masks only: one byte per element, nonzero = attend
};

inline const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
    case DType::kFloat32: return "float32";
    case DType::kBool: return "bool";
  }
  return "unknown";
}

inline std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
    case DType::kBFloat16: return 2;
    case DType::kFloat32: return 4;
    case DType::kBool: return 1;
  }
  return 0;
}

}  // namespace sdpa
