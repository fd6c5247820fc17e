#!/usr/bin/env bash
# Installs what building and testing sdpa_core needs on a fresh Debian/Ubuntu machine with Python 3.10+.
# torch is pinned to the CPU wheel this project's CI uses; on a GPU machine, install your CUDA torch first
# and it is kept (pip leaves a satisfying torch alone).
set -euo pipefail
PY=${PYTHON:-python3}

if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "torch==2.13.0"
fi
"$PY" -m pip install -q "scikit-build-core>=0.10" "pybind11>=2.12" "nvidia-cutlass>=3.5" "cmake>=3.24" ninja pytest

# GoogleTest from Debian's packages, for the C++ suites.
if [ ! -f /usr/include/gtest/gtest.h ] && [ "${SDPA_SKIP_APT:-0}" != 1 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libgtest-dev >/dev/null
fi
