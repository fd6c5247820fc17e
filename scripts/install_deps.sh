#!/usr/bin/env bash
# Installs what building and testing sdpa_core needs on a fresh Debian/Ubuntu machine with Python 3.10+,
# into the interpreter scripts/_python_env.sh picks (the repo's .venv unless PYTHON or VIRTUAL_ENV says).
# A torch that already imports (a CUDA build on a GPU machine) is kept; otherwise torch is pinned to the
# version CI tests, 2.13.0 (SDPA_TORCH overrides the requirement). SDPA_SKIP_APT=1 skips GoogleTest.
set -euo pipefail
source "$(dirname "$0")/_python_env.sh"

# The scripts pass CMake options as `pip install -C ...`, which needs pip 23.1; a venv starts with the
# distribution's pip (23.0 on Debian 12).
"$PY" -m pip install -q "pip>=23.1"
if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "== installing ${SDPA_TORCH:-torch==2.13.0} into $PY"
  "$PY" -m pip install -q "${SDPA_TORCH:-torch==2.13.0}"
fi
"$PY" -m pip install -q "scikit-build-core>=0.11" "pybind11>=2.12" "nvidia-cutlass>=3.5" "cmake>=3.24" ninja pytest
# transformers for tests/python/test_transformers.py (the optional sdpa_core[transformers] extra). The
# constraint pins torch to the one installed above, so pip can never swap it (a CUDA torch on a GPU
# machine, the CPU one in CI) for another build.
TORCH_PIN=$(mktemp)
"$PY" -c "import torch; print('torch==' + torch.__version__)" > "$TORCH_PIN"
"$PY" -m pip install -q -c "$TORCH_PIN" "transformers>=5.17,<6"
rm -f "$TORCH_PIN"

# GoogleTest from Debian's packages, for the C++ suites.
if [ ! -f /usr/include/gtest/gtest.h ] && [ "${SDPA_SKIP_APT:-0}" != 1 ]; then
  sdpa_apt_install libgtest-dev || sdpa_die "could not install libgtest-dev (needs root or sudo)"
fi
