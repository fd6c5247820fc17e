#!/usr/bin/env bash
# The project's test command (README, CI): installs everything, builds the package and libsdpa, and runs
# GoogleTest (ctest), the installed-package C++ example, and pytest. Needs no GPU; GPU tests skip with a
# reason here and run on a GPU machine (scripts/gpu_verify.sh). Python: see scripts/_python_env.sh.
#
# Where nvcc exists, the package build compiles every fused-kernel template once (every bias trait, one
# dtype and head dim, sm_80, and the Hopper forward and backward for sm_90a) so a template error cannot land; SDPA_TEST_KERNELS=all compiles them all
# (for SDPA_CUDA_ARCHS, default 80;90). SDPA_ENABLE_CUDA=ON is explicit because a CI machine has nvcc
# but no GPU, where AUTO would build no kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_python_env.sh
bash scripts/install_deps.sh

KERNEL_FLAGS=()
if command -v nvcc >/dev/null || [ -n "${CUDACXX:-}" ]; then
  KERNEL_FLAGS=(-C cmake.define.SDPA_ENABLE_CUDA=ON)
  if [ "${SDPA_TEST_KERNELS:-ci}" != all ]; then
    # The backward of the two traits that take its two bias forms (split ALiBi; an elementwise dense bias
    # with its gradient): a backward file costs ~3 forward ones on a CI core.
    KERNEL_FLAGS+=(-C cmake.define.SDPA_KERNEL_DTYPES=bf16 -C cmake.define.SDPA_KERNEL_HEAD_DIMS=128
                   -C cmake.define.SDPA_CUDA_ARCHS=80
                   "-C" "cmake.define.SDPA_BACKWARD_BIASES=AlibiCausalUpperLeft;DenseBiasCausalLowerRight"
                   -C cmake.define.SDPA_BUILD_SM90=ON)  # the Hopper templates compile here too (sm_90a)
  elif [ -n "${SDPA_CUDA_ARCHS:-}" ]; then
    KERNEL_FLAGS+=(-C "cmake.define.SDPA_CUDA_ARCHS=$SDPA_CUDA_ARCHS")
  fi
fi
echo "== building and installing sdpa_core (python package + fused kernels) into $PY"
# -v: pip hides the build's output otherwise; this shows CMake's kernel/arch lines and ninja's [n/N].
# A build dir of its own: the kernel subset stays in its CMake cache, out of a later plain `pip install .`.
"$PY" -m pip install -v --no-build-isolation --no-deps . -C build-dir=build/test-pip "${KERNEL_FLAGS[@]}"

echo "== libsdpa + GoogleTest (host)"
BUILD=build/test
cmake -S . -B "$BUILD" -G Ninja -DSDPA_ENABLE_CUDA=OFF -DCMAKE_INSTALL_PREFIX="$PWD/$BUILD/install" >/dev/null
cmake --build "$BUILD"
ctest --test-dir "$BUILD" --output-on-failure
cmake --install "$BUILD" >/dev/null

echo "== C++ consumer of the installed package (find_package(sdpa))"
cmake -S examples/cpp_consumer -B "$BUILD/example" -G Ninja -DCMAKE_PREFIX_PATH="$PWD/$BUILD/install" >/dev/null
cmake --build "$BUILD/example"
"$BUILD/example/demo"
cmake -S examples/cpp_server -B "$BUILD/server" -G Ninja -DCMAKE_PREFIX_PATH="$PWD/$BUILD/install" >/dev/null
cmake --build "$BUILD/server"
"$BUILD/server/server"

echo "== pytest"
cd tests/python && "$PY" -m pytest -q -p no:cacheprovider .
