#include "device_info.hpp"

#if SDPA_WITH_CUDA
#include <cuda_runtime.h>

#include <array>
#include <atomic>
#endif

namespace sdpa {

#if SDPA_WITH_CUDA
int current_compute_capability() {
  constexpr int kMaxDevices = 64;
  static std::array<std::atomic<int>, kMaxDevices> cache{};  // 0 = not asked yet
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0) {
    cudaGetLastError();  // clear the sticky-free error so later launches don't report it
    return 0;
  }
  if (device < kMaxDevices) {
    if (int cached = cache[device].load(std::memory_order_relaxed)) return cached;
  }
  int major = 0, minor = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  const int capability = 10 * major + minor;
  if (device < kMaxDevices) cache[device].store(capability, std::memory_order_relaxed);
  return capability;
}
#else
int current_compute_capability() { return 0; }
#endif

}  // namespace sdpa
