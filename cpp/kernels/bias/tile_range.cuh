// Tile-level iteration ranges a bias hands to a kernel, and the integer helpers they are built from.
//
// Header-only and free of CUDA headers so that host code (the dispatcher, GoogleTest) compiles it with a
// plain C++ compiler; under nvcc every function is also callable from device code.
#pragma once

#if defined(__CUDACC__)
#define SDPA_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SDPA_HOST_DEVICE inline
#endif

namespace sdpa {

// Floor division that rounds towards -inf: causal offsets make numerators negative when Sq > Skv.
SDPA_HOST_DEVICE int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
SDPA_HOST_DEVICE int ceil_div(int a, int b) { return -floor_div(-a, b); }
SDPA_HOST_DEVICE int clamp_int(int x, int lo, int hi) { return x < lo ? lo : (x > hi ? hi : x); }

// The tiles one block visits along the dimension it iterates over, [begin, end), and the contiguous
// sub-range [unmasked_begin, unmasked_end) whose tiles need no element masking at all: every element of
// such a tile is inside the sequence and kept by the bias's mask. Tiles outside [begin, end) are fully
// masked and are never loaded.
struct TileRange {
  int begin = 0;
  int end = 0;
  int unmasked_begin = 0;
  int unmasked_end = 0;

  SDPA_HOST_DEVICE bool empty() const { return begin >= end; }
  SDPA_HOST_DEVICE bool needs_mask(int tile) const {
    return tile < unmasked_begin || tile >= unmasked_end;
  }
};

}  // namespace sdpa
