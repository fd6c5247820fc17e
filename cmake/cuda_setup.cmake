# Decides whether the fused kernels are built, and where the CUTLASS/CuTe headers come from.
# CUDA is optional: without nvcc the library still builds (host reference, validation, traits) and every
# forward call reports "built without CUDA" so callers can fall back.
include(CheckLanguage)

set(SDPA_WITH_CUDA OFF)
if(SDPA_ENABLE_CUDA STREQUAL "AUTO")
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(SDPA_WITH_CUDA ON)
  else()
    message(STATUS "sdpa: nvcc not found, building without fused CUDA kernels")
  endif()
elseif(SDPA_ENABLE_CUDA)
  set(SDPA_WITH_CUDA ON)
endif()

if(SDPA_WITH_CUDA)
  set(CMAKE_CUDA_ARCHITECTURES ${SDPA_CUDA_ARCHS})
  enable_language(CUDA)
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  find_package(CUDAToolkit REQUIRED)
  include(find_cutlass)
endif()
