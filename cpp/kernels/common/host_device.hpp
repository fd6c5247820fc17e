// SDPA_HOST_DEVICE and the integer helpers every layer uses.
//
// Free of CUDA headers so that host code (the dispatcher, GoogleTest) compiles the arch-free layers with a
// plain C++ compiler; under nvcc every function is also callable from device code.
#pragma once

#if defined(__CUDACC__)
#define SDPA_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SDPA_HOST_DEVICE inline
#endif

// A device lambda the compiler must inline: kernels hold fragments in registers that lambdas capture by
// reference, and one lambda left out of line puts those fragments in local memory (the 176-key sm90 forward
// got a 1.4 KB stack frame that way).
#define SDPA_INLINE_LAMBDA __attribute__((always_inline))

namespace sdpa {

// Floor division that rounds towards -inf: causal offsets make numerators negative when Sq > Skv.
SDPA_HOST_DEVICE int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
SDPA_HOST_DEVICE int ceil_div(int a, int b) { return -floor_div(-a, b); }
SDPA_HOST_DEVICE int clamp_int(int x, int lo, int hi) { return x < lo ? lo : (x > hi ? hi : x); }

}  // namespace sdpa
