# Decides whether the fused kernels are built and for which GPU architectures, caps parallel nvcc jobs,
# and finds the CUTLASS/CuTe headers when kernels are built.
# CUDA is optional: without kernels the library still builds (host reference, validation, traits) and
# every forward call reports "built without CUDA" so callers can fall back.
#
#   SDPA_ENABLE_CUDA=AUTO  kernels for exactly the GPUs nvidia-smi shows, when nvcc is found too; none on
#                          a machine without a visible GPU (a CPU host or CI), where they could not run
#                          and would cost an hour of compiling.
#   SDPA_ENABLE_CUDA=ON    kernels whatever this machine has (a wheel built for another machine), for
#                          SDPA_CUDA_ARCHS or else 80;90.
#   SDPA_CUDA_ARCHS set    always wins over what AUTO detects.
include(CheckLanguage)

# The kernels use sm_80 instructions (mma.sync bf16, cp.async); older GPUs cannot run them.
set(_sdpa_min_arch 80)
set(_sdpa_default_archs "80;90")

# Sets <out> to the visible GPUs' architectures ("90", "80;90", ...; deduplicated) and <out_count> to how
# many GPUs nvidia-smi lists; both empty/0 when it is absent or sees no GPU.
function(_sdpa_visible_gpu_archs out out_count)
  set(_archs "")
  set(_count 0)
  find_program(_sdpa_nvidia_smi nvidia-smi)
  if(_sdpa_nvidia_smi)
    execute_process(COMMAND "${_sdpa_nvidia_smi}" --query-gpu=compute_cap --format=csv,noheader
                    RESULT_VARIABLE _rc OUTPUT_VARIABLE _caps ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
    if(_rc EQUAL 0 AND _caps)
      string(REPLACE "\n" ";" _caps "${_caps}")
      foreach(_cap IN LISTS _caps)
        string(STRIP "${_cap}" _cap)
        if(_cap MATCHES "^([0-9]+)\\.([0-9]+)$")
          math(EXPR _count "${_count} + 1")
          list(APPEND _archs "${CMAKE_MATCH_1}${CMAKE_MATCH_2}")
        endif()
      endforeach()
      list(REMOVE_DUPLICATES _archs)
    endif()
  endif()
  set(${out} "${_archs}" PARENT_SCOPE)
  set(${out_count} "${_count}" PARENT_SCOPE)
endfunction()

set(SDPA_WITH_CUDA OFF)
set(_sdpa_archs "${SDPA_CUDA_ARCHS}")
set(_sdpa_archs_from "SDPA_CUDA_ARCHS")
set(_sdpa_build_anyway
    "-DSDPA_ENABLE_CUDA=ON -DSDPA_CUDA_ARCHS=\"80;90\" (pip: -C cmake.define.SDPA_ENABLE_CUDA=ON -C cmake.define.SDPA_CUDA_ARCHS=\"80;90\")")

string(TOUPPER "${SDPA_ENABLE_CUDA}" _sdpa_enable)
if(_sdpa_enable STREQUAL "AUTO")
  _sdpa_visible_gpu_archs(_sdpa_gpu_archs _sdpa_gpu_count)
  if(_sdpa_gpu_count EQUAL 0)
    # No GPU: only say whether kernels could be built; the full CUDA check would cost a test compile.
    find_program(_sdpa_nvcc NAMES nvcc HINTS "$ENV{CUDA_PATH}/bin" /usr/local/cuda/bin)
    if(_sdpa_nvcc OR CMAKE_CUDA_COMPILER OR DEFINED ENV{CUDACXX})
      message(STATUS "sdpa: nvcc found but no GPU visible: building without fused kernels; to build them anyway: ${_sdpa_build_anyway}")
    else()
      message(STATUS "sdpa: no GPU visible and nvcc not found: building without fused kernels")
    endif()
  else()
    check_language(CUDA)
    if(NOT CMAKE_CUDA_COMPILER)
      message(STATUS "sdpa: ${_sdpa_gpu_count} GPU(s) visible but nvcc not found (put it on PATH or set CUDACXX): building without fused kernels")
    else()
      if(NOT _sdpa_archs)
        set(_sdpa_archs "")
        foreach(_arch IN LISTS _sdpa_gpu_archs)
          if(_arch LESS _sdpa_min_arch)
            message(STATUS "sdpa: skipping visible sm_${_arch}: the fused kernels need sm_${_sdpa_min_arch} or newer")
          else()
            list(APPEND _sdpa_archs "${_arch}")
          endif()
        endforeach()
        set(_sdpa_archs_from "the ${_sdpa_gpu_count} visible GPU(s)")
      endif()
      if(_sdpa_archs)
        set(SDPA_WITH_CUDA ON)
      else()
        message(STATUS "sdpa: no visible GPU can run the fused kernels: building without them")
      endif()
    endif()
  endif()
elseif(NOT SDPA_ENABLE_CUDA)
  message(STATUS "sdpa: SDPA_ENABLE_CUDA=${SDPA_ENABLE_CUDA}: building without fused kernels")
else()
  set(SDPA_WITH_CUDA ON)
  if(NOT _sdpa_archs)
    set(_sdpa_archs "${_sdpa_default_archs}")
    set(_sdpa_archs_from "the default for SDPA_ENABLE_CUDA=ON")
  endif()
endif()

if(SDPA_WITH_CUDA)
  # A normal variable, not the cache: the user's SDPA_CUDA_ARCHS stays empty, so a later configure on a
  # machine with other GPUs detects again instead of reusing this machine's list.
  set(SDPA_CUDA_ARCHS_BUILT "${_sdpa_archs}")
  set(CMAKE_CUDA_ARCHITECTURES ${_sdpa_archs})
  enable_language(CUDA)
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  find_package(CUDAToolkit REQUIRED)
  message(STATUS "sdpa: fused kernels for CUDA archs ${_sdpa_archs} (from ${_sdpa_archs_from}), nvcc ${CMAKE_CUDA_COMPILER_VERSION}")
  include(find_cutlass)

  # Each nvcc process on a CuTe kernel takes 1-2 GiB; Ninja's default of cores + 2 jobs can run a small
  # machine out of memory. The kernels compile in a pool of min(cores, available memory / job memory).
  set(SDPA_CUDA_JOB_MEMORY_MB 2048 CACHE STRING "Memory budgeted per parallel nvcc job (sizes the Ninja job pool)")
  cmake_host_system_information(RESULT _sdpa_cores QUERY NUMBER_OF_LOGICAL_CORES)
  cmake_host_system_information(RESULT _sdpa_mem_mb QUERY AVAILABLE_PHYSICAL_MEMORY)
  math(EXPR _sdpa_jobs "${_sdpa_mem_mb} / ${SDPA_CUDA_JOB_MEMORY_MB}")
  if(_sdpa_jobs GREATER _sdpa_cores)
    set(_sdpa_jobs ${_sdpa_cores})
  endif()
  if(_sdpa_jobs LESS 1)
    set(_sdpa_jobs 1)
  endif()
  set_property(GLOBAL APPEND PROPERTY JOB_POOLS sdpa_cuda_compile=${_sdpa_jobs})
  if(CMAKE_GENERATOR MATCHES "Ninja")
    message(STATUS "sdpa: at most ${_sdpa_jobs} kernel compiles at once (${_sdpa_cores} cores, ${_sdpa_mem_mb} MiB available, ${SDPA_CUDA_JOB_MEMORY_MB} MiB per job)")
  endif()
endif()
