#include "device_info.hpp"

#if SDPA_WITH_CUDA
#include <cuda_runtime.h>

#include <array>
#include <atomic>
#endif

namespace sdpa {

#if SDPA_WITH_CUDA
namespace {

constexpr int kMaxDevices = 64;
using DeviceCache = std::array<std::atomic<int>, kMaxDevices>;  // 0 = not asked yet

// ask(device) for the current device, cached per device; `none` when no device is visible or ask fails.
template <class Ask>
int cached_per_device(DeviceCache& cache, Ask ask, int none) {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0) {
    cudaGetLastError();  // clear the sticky-free error so later launches don't report it
    return none;
  }
  if (device < kMaxDevices) {
    if (int cached = cache[device].load(std::memory_order_relaxed)) return cached;
  }
  const int value = ask(device);
  if (value <= 0) {
    cudaGetLastError();
    return none;
  }
  if (device < kMaxDevices) cache[device].store(value, std::memory_order_relaxed);
  return value;
}

int attribute(cudaDeviceAttr what, int device) {
  int value = 0;
  return cudaDeviceGetAttribute(&value, what, device) == cudaSuccess ? value : 0;
}

}  // namespace

int current_compute_capability() {
  static DeviceCache cache{};
  return cached_per_device(
      cache,
      [](int device) {
        const int major = attribute(cudaDevAttrComputeCapabilityMajor, device);
        const int minor = attribute(cudaDevAttrComputeCapabilityMinor, device);
        return major > 0 ? 10 * major + minor : 0;
      },
      0);
}

int current_sm_count() {
  static DeviceCache cache{};
  return cached_per_device(cache, [](int device) { return attribute(cudaDevAttrMultiProcessorCount, device); }, 1);
}

int current_l2_bytes() {
  static DeviceCache cache{};
  return cached_per_device(cache, [](int device) { return attribute(cudaDevAttrL2CacheSize, device); }, 0);
}
#else
int current_compute_capability() { return 0; }
int current_sm_count() { return 1; }
int current_l2_bytes() { return 0; }
#endif

}  // namespace sdpa
