#!/usr/bin/env bash
# A narrow GPU check for iterating on one kernel family between full runs of scripts/gpu_verify.sh: builds
# only the kernels named by SDPA_KERNEL_BIASES / _DTYPES / _HEAD_DIMS (default: the serving biases, bf16,
# hd128; no backward), installs the Python package on it, then runs the GoogleTest filter and pytest
# expression given and the serving benchmarks. Logs under $OUT (or ./gpu_quick_out).
# Optional: BENCH_CASES (prefill benchmark cases, e.g. d128-s8k,d128-s8k-causal; with Hopper kernels built also
# timed on the sm80 kernels of the build), SANITIZE_FILTER (GoogleTest filter of forward cases for memcheck,
# racecheck and synccheck), SKIP_SERVING_BENCH=1 (no decode/varlen benchmarks), SDPA_BUILD_BACKWARD=ON (the
# backward kernels too: their GoogleTest suite then also runs on the sm80 kernels, SANITIZE_FILTER also
# sanitizes test_backward_gpu, and BENCH_MODES=fwd,fwd+bwd times training rows).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_quick_out}; mkdir -p "$OUT"
B=/tmp/sdpa-quick
BIASES=${SDPA_KERNEL_BIASES:-NoBias;CausalUpperLeft;CausalLowerRight;Alibi;AlibiCausalUpperLeft;AlibiCausalLowerRight}
{
  cmake -S . -B $B -G Ninja -DSDPA_ENABLE_CUDA=ON -DSDPA_CUDA_ARCHS=90 -DSDPA_KERNEL_BIASES="$BIASES" \
    -DSDPA_KERNEL_DTYPES="${SDPA_KERNEL_DTYPES:-bf16}" -DSDPA_KERNEL_HEAD_DIMS="${SDPA_KERNEL_HEAD_DIMS:-128}" \
    -DSDPA_BUILD_BACKWARD="${SDPA_BUILD_BACKWARD:-OFF}" -DSDPA_BUILD_SM90="${SDPA_BUILD_SM90:-AUTO}" -DCMAKE_INSTALL_PREFIX=$B/install && cmake --build $B -j16 && cmake --install $B &&
  python3 -m pip install -q --no-build-isolation --no-deps . -C build-dir=/tmp/sdpa-quick-py \
    -C cmake.define.SDPA_USE_INSTALLED=ON -C cmake.define.sdpa_DIR=$B/install/lib/cmake/sdpa
} >"$OUT/build.txt" 2>&1 || { tail -30 "$OUT/build.txt"; exit 1; }
status=0
hopper=$(compgen -G "$B/cpp/generated/fwd_sm90_*.cu" >/dev/null && echo ON || echo OFF)  # SDPA_BUILD_SM90 took effect
for t in $B/tests/cpp/test_*_gpu; do
  "$t" --gtest_brief=1 --gtest_filter="${GTEST_FILTER:-*}" >>"$OUT/gtest.txt" 2>&1 || status=1
done
if [ "$hopper" = ON ]; then  # the same suites on the sm80 kernels of this build
  for t in $B/tests/cpp/test_forward_gpu $B/tests/cpp/test_varlen_gpu $B/tests/cpp/test_backward_gpu; do
    SDPA_MAX_ARCH=80 "$t" --gtest_brief=1 --gtest_filter="${GTEST_FILTER:-*}" >>"$OUT/gtest_sm80.txt" 2>&1 || status=1
  done
  grep -E "PASSED|FAILED" "$OUT/gtest_sm80.txt" | head -10
fi
grep -E "PASSED|FAILED|Failure" "$OUT/gtest.txt" | head -20
if [ -n "${SANITIZE_FILTER:-}" ]; then  # e.g. '*_bf16_hd128_b2h2x2_q113_kv17_bshd*'
  for tool in memcheck racecheck synccheck; do
    for t in $B/tests/cpp/test_forward_gpu $B/tests/cpp/test_backward_gpu; do
      [ -x "$t" ] || continue
      compute-sanitizer --tool $tool --error-exitcode 1 "$t" --gtest_filter="$SANITIZE_FILTER" \
        --gtest_brief=1 >>"$OUT/sanitize.txt" 2>&1 || { status=1; echo "$tool $(basename "$t") FAILED"; }
    done
  done
  grep -E "ERROR SUMMARY|PASSED|FAILED" "$OUT/sanitize.txt" | sort | uniq -c
fi
# the toy server on the installed package, on this GPU
{ cmake -S examples/cpp_server -B $B/server -G Ninja -DCMAKE_PREFIX_PATH=$B/install && cmake --build $B/server &&
  $B/server/server; } >"$OUT/server.txt" 2>&1 || status=1
tail -4 "$OUT/server.txt"
python3 -m pytest -q -p no:cacheprovider tests/python -k "${PYTEST_K:-varlen}" >"$OUT/pytest.txt" 2>&1 || status=1
tail -3 "$OUT/pytest.txt"
if [ -n "${BENCH_CASES:-}" ]; then  # prefill rows; with the Hopper kernels also their sm80 twins
  python3 -m benchmarks.sdpa_bench --cases "$BENCH_CASES" --modes "${BENCH_MODES:-fwd}" --md "$OUT/bench.md" --png '' \
    >"$OUT/bench.txt" 2>&1
  cat "$OUT/bench.md" | grep "^|"
  if [ "$hopper" = ON ]; then
    SDPA_MAX_ARCH=80 python3 -m benchmarks.sdpa_bench --cases "$BENCH_CASES" --modes "${BENCH_MODES:-fwd}" --contenders "sdpa_core own" \
      --no-extras --md "$OUT/bench_sm80.md" --png '' >"$OUT/bench_sm80.txt" 2>&1
    cat "$OUT/bench_sm80.md" | grep "^|"
  fi
fi
[ -n "${SKIP_SERVING_BENCH:-}" ] && exit $status
python3 -m benchmarks.sdpa_bench.decode --md "$OUT/decode.md" >/dev/null 2>&1 && cat "$OUT/decode.md" | sed -n 5,14p
python3 -m benchmarks.sdpa_bench.varlen --md "$OUT/varlen.md" >/dev/null 2>&1 && cat "$OUT/varlen.md"
exit $status
