# CUTLASS/CuTe are header-only. Look, in order, at -DCUTLASS_DIR, $CUTLASS_DIR, third_party/cutlass, and
# the headers the `nvidia-cutlass` wheel ships under cutlass_library/source/include.
set(CUTLASS_DIR "$ENV{CUTLASS_DIR}" CACHE PATH "CUTLASS source tree (holds include/cute)")

set(_sdpa_cutlass_candidates "${CUTLASS_DIR}" "${PROJECT_SOURCE_DIR}/third_party/cutlass")
find_package(Python COMPONENTS Interpreter QUIET)
if(Python_EXECUTABLE)
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c
            "import cutlass_library, os; print(os.path.join(os.path.dirname(cutlass_library.__file__), 'source'))"
    OUTPUT_VARIABLE _sdpa_wheel_cutlass OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  list(APPEND _sdpa_cutlass_candidates "${_sdpa_wheel_cutlass}")
endif()

set(SDPA_CUTLASS_INCLUDE_DIR "")
foreach(_dir IN LISTS _sdpa_cutlass_candidates)
  if(_dir AND EXISTS "${_dir}/include/cute/tensor.hpp")
    set(SDPA_CUTLASS_INCLUDE_DIR "${_dir}/include")
    break()
  endif()
endforeach()
if(NOT SDPA_CUTLASS_INCLUDE_DIR)
  message(FATAL_ERROR "sdpa: CUTLASS/CuTe headers not found. `pip install nvidia-cutlass`, or pass "
                      "-DCUTLASS_DIR=<cutlass checkout>, or build with -DSDPA_ENABLE_CUDA=OFF.")
endif()
message(STATUS "sdpa: CUTLASS headers from ${SDPA_CUTLASS_INCLUDE_DIR}")
