#!/usr/bin/env bash
# A change to the kernels must not change their speed: builds libsdpa + the Python package from two
# source trees (before, after) on this GPU, and times sdpa_core's own kernels (dispatch_policy "own",
# forward cases of the benchmark) for both in one run, on one card, interleaved case by case.
#
#   scripts/gpu_before_after.sh <before-tree> [<after-tree>, default .]
#   SDPA_BA_AFTER_INSTALL=<prefix>   reuse an installed libsdpa for the after tree (gpu_verify's build/gpu/install)
#
# Writes $OUT/before_after.md (or ./gpu_verify_out/): both tables and the after/before ratio per case.
# Needs nvcc, cmake, ninja and the CUTLASS headers (nvidia-cutlass wheel importable) like gpu_verify.sh.
set -euo pipefail
BEFORE=$(realpath "$1")
AFTER=$(realpath "${2:-.}")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/gpu_verify_out}
mkdir -p "$OUT"
ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
PY=${PYTHON:-python3}

# build_tree <source tree> <name> [<existing install prefix>]: libsdpa in /tmp/ba-<name> (or the given
# prefix, already built, e.g. gpu_verify.sh's), the package in /tmp/ba-site-<name>. Only the benchmark's
# dtype (bf16) is compiled unless SDPA_BA_CMAKE_ARGS says otherwise.
build_tree() {
  local src=$1 name=$2 prefix=${3:-}
  if [ -z "$prefix" ]; then
    prefix=/tmp/ba-$name/install
    cmake -S "$src" -B "/tmp/ba-$name" -G Ninja -DSDPA_ENABLE_CUDA=ON -DSDPA_CUDA_ARCHS="$ARCH" -DSDPA_BUILD_TESTS=OFF \
          -DCMAKE_INSTALL_PREFIX="$prefix" ${SDPA_BA_CMAKE_ARGS:--DSDPA_KERNEL_DTYPES=bf16} >/dev/null
    cmake --build "/tmp/ba-$name" >/dev/null
    cmake --install "/tmp/ba-$name" >/dev/null
  fi
  "$PY" -m pip install -q --no-build-isolation --no-deps --target "/tmp/ba-site-$name" "$src" \
    -C build-dir="/tmp/ba-py-$name" -C cmake.define.SDPA_USE_INSTALLED=ON \
    -C cmake.define.sdpa_DIR="$prefix/lib/cmake/sdpa"
}

start=$SECONDS
build_tree "$BEFORE" before
build_tree "$AFTER" after "${SDPA_BA_AFTER_INSTALL:-}"
echo "built both trees in $((SECONDS - start)) s"

cd "$ROOT"  # the benchmark package comes from this tree for both builds
CASES=${SDPA_BA_CASES:-d128-s8k,d128-s8k-causal,d128-s16k-causal,d128-s8k-alibi,d128-q2k-kv8k-lr,d128-s4k-bias,d64-s8k-causal,d64-s8k-alibi,d256-s8k-causal}
for round in 1 2; do  # two rounds, alternating, so drift of the card's clocks hits both alike
  for name in before after; do
    PYTHONPATH="/tmp/ba-site-$name:${PYTHONPATH:-}" "$PY" -m benchmarks.sdpa_bench --modes fwd \
      --contenders "sdpa_core own" --cases "$CASES" --no-extras --png '' --md "$OUT/ba_${name}_$round.md" \
      >/dev/null
  done
done
"$PY" - "$OUT" <<'PYEOF'
import re, sys, pathlib
out = pathlib.Path(sys.argv[1])
def table(path):
    rows = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2:
            nums = [c for c in cells[1:] if re.fullmatch(r"[0-9.]+", c)]
            if nums and not cells[0].startswith("-"):
                rows.setdefault(cells[0], float(nums[0]))
    return rows
best = {n: {} for n in ("before", "after")}
for n in best:
    for r in (1, 2):
        for case, v in table(out / f"ba_{n}_{r}.md").items():
            best[n][case] = max(v, best[n].get(case, 0.0))
lines = ["| case | before TFLOP/s | after TFLOP/s | after / before |", "|---|---|---|---|"]
for case, b in best["before"].items():
    a = best["after"].get(case)
    if a:
        lines.append(f"| {case} | {b:.0f} | {a:.0f} | {a / b:.3f} |")
text = "\n".join(lines)
(out / "before_after.md").write_text(text + "\n")
print(text)
PYEOF
