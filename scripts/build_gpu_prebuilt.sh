#!/usr/bin/env bash
# Compiles libsdpa with every fused kernel plus the GoogleTest suites on THIS machine (nvcc, no GPU
# needed), then stages just what scripts/gpu_verify.sh needs into .carry/gpu (git-ignored) and packs it
# as .carry/gpu.tar.xz, small enough to carry to a GPU machine: install/ (headers, static libsdpa, CMake
# package) and the test binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
ARCHS=${SDPA_CUDA_ARCHS:-90}
BUILD=build/gpu-prebuilt
STAGE=.carry/gpu
cmake -S . -B "$BUILD" -G Ninja -DSDPA_ENABLE_CUDA=ON -DSDPA_CUDA_ARCHS="$ARCHS" -DSDPA_BUILD_TESTS=ON \
      -DCMAKE_INSTALL_PREFIX="$PWD/$BUILD/install" ${SDPA_CMAKE_ARGS:-}
cmake --build "$BUILD" -j "${JOBS:-2}"
cmake --install "$BUILD" >/dev/null
rm -rf "$STAGE" && mkdir -p "$STAGE/tests/cpp"
cp -r "$BUILD/install" "$STAGE/install"
find "$BUILD/tests/cpp" -maxdepth 1 -type f -executable -name 'test_*' -exec cp {} "$STAGE/tests/cpp/" \;
# Kernel fatbins compress ~6x; the archive is what travels (scripts/gpu_verify.sh unpacks it).
tar -C "$STAGE" -cf - . | xz -T2 -6 >"$STAGE.tar.xz"
du -sh "$STAGE" "$STAGE.tar.xz"
