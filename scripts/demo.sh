#!/usr/bin/env bash
# Installs sdpa_core and runs the short demo: which path each bias takes, checked against a float64
# reference. Python: see scripts/_python_env.sh (the repo's .venv unless PYTHON or VIRTUAL_ENV says).
# The build decides about CUDA kernels itself (SDPA_ENABLE_CUDA=AUTO): kernels for this machine's GPUs,
# none without a visible GPU (everything then runs through PyTorch).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_python_env.sh
SDPA_SKIP_APT=1 bash scripts/install_deps.sh
echo "== building and installing sdpa_core into $PY"
# -v: pip hides the build's output otherwise, and with kernels it runs for many minutes; a CPU-only
# build just prints CMake's lines.
"$PY" -m pip install -v --no-build-isolation --no-deps . "$@"
"$PY" examples/demo.py
