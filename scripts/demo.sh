#!/usr/bin/env bash
# Installs sdpa_core and runs the short demo: which path each bias takes, checked against PyTorch.
# Without a visible GPU the package is built without CUDA kernels (everything runs through PyTorch).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SDPA_SKIP_APT=1 bash scripts/install_deps.sh
FLAGS=()
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  FLAGS=(-C cmake.define.SDPA_ENABLE_CUDA=OFF)
fi
"$PY" -m pip install -q --no-build-isolation --no-deps . "${FLAGS[@]}"
"$PY" examples/demo.py
