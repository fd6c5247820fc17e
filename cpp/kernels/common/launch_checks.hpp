// The two CUDA checks every kernel family's launcher makes, with the family's name in the message:
// raising a kernel's dynamic shared-memory limit, and the error state right after a launch.
#pragma once

#include <string>

#include <cuda_runtime.h>

#include "sdpa/status.hpp"

namespace sdpa {

// After a launch: kCudaError naming the family and the launch, or success.
inline Status launch_status(const char* family, const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return Status::success();
  return Status::error(StatusCode::kCudaError, std::string(family) + ": " + what + ": " + cudaGetErrorString(err));
}

// Lets `kernel` use `bytes` of dynamic shared memory (above the 48 KB a launch gets by default).
// Per-function attribute, cheap to set again; done every call so no static state needs a lock.
template <class Kernel>
Status allow_smem(Kernel kernel, int bytes, const char* family) {
  if (bytes <= 48 * 1024) return Status::success();
  const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (err == cudaSuccess) return Status::success();
  return Status::error(StatusCode::kCudaError,
                       std::string(family) + ": cudaFuncSetAttribute: " + cudaGetErrorString(err));
}

}  // namespace sdpa
