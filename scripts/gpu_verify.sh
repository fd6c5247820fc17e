#!/usr/bin/env bash
# The whole GPU verification in one go, on a machine with an NVIDIA GPU:
#   libsdpa with every fused kernel -> Python package -> GoogleTest GPU suites -> compute-sanitizer
#   (memcheck, racecheck; one config per bias) -> pytest (GPU tests included) -> benchmark.
# Logs go to $OUT (or ./gpu_verify_out): log.txt (everything), summary.txt, bench.md, bench.png, decode.md,
# varlen.md, clocks.md.
#
# A build made elsewhere can be reused: point SDPA_PREBUILT at a CMake build dir of this repo configured
# with -DCMAKE_INSTALL_PREFIX=<dir>/install and installed (scripts/build_gpu_prebuilt.sh makes one).
# Without it the kernels are compiled here for SDPA_CUDA_ARCHS (default: this GPU's arch).
# SDPA_BUILD_SM90 (default AUTO: on for an sm90 GPU) adds the Hopper (wgmma) forward kernels, which dispatch then
# prefers on sm90; a run with SDPA_MAX_ARCH=80 in the environment times the sm80 kernels of the same build.
# SDPA_VERIFY_CMAKE_ARGS adds CMake arguments to the build (e.g. -DSDPA_KERNEL_DTYPES=bf16 for a shorter one).
# SDPA_VERIFY_STEPS picks steps (default all: python,gtest,sanitize,pytest,bench), e.g. to split the run
# across calls with a time limit.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu_verify_out}
mkdir -p "$OUT"
LOG=$OUT/log.txt
SUMMARY=$OUT/summary.txt
: >"$LOG"; : >"$SUMMARY"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
failures=0

STEPS=",env,build,${SDPA_VERIFY_STEPS:-python,gtest,sanitize,pytest,bench},"  # build: only without a prebuilt
wanted() { [[ $STEPS == *",$1,"* ]]; }

run_step() {  # run_step <step> <name> <command...>: logs output, records pass/fail in the summary
  local step=$1 name=$2; shift 2
  wanted "$step" || return 0
  echo "== $name" | tee -a "$LOG"
  local start=$SECONDS
  if "$@" >>"$LOG" 2>&1; then
    echo "PASS  $name ($((SECONDS - start)) s)" | tee -a "$SUMMARY"
  else
    echo "FAIL  $name ($((SECONDS - start)) s)" | tee -a "$SUMMARY"
    failures=$((failures + 1))
  fi
}

environment() {
  date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  nvcc --version | tail -1
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
}

build_libsdpa() {
  local arch
  arch=${SDPA_CUDA_ARCHS:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)}
  cmake -S . -B "$PREBUILT" -G Ninja -DSDPA_ENABLE_CUDA=ON -DSDPA_CUDA_ARCHS="$arch" \
        -DSDPA_BUILD_SM90="${SDPA_BUILD_SM90:-AUTO}" -DCMAKE_INSTALL_PREFIX="$PREBUILT/install" \
        ${SDPA_VERIFY_CMAKE_ARGS:-} && cmake --build "$PREBUILT" && cmake --install "$PREBUILT"
}

install_python() {
  "$PY" -m pip install -q --no-build-isolation --no-deps . -C build-dir=/tmp/sdpa-pybuild \
    -C cmake.define.SDPA_USE_INSTALLED=ON -C cmake.define.sdpa_DIR="$PREBUILT/install/lib/cmake/sdpa"
}

hopper_built() {  # the build holds Hopper forward kernels (SDPA_BUILD_SM90): its generated files, or for a
  # prebuilt that carries only install/, the registry's family name in the library
  compgen -G "$PREBUILT/cpp/generated/fwd_sm90_*.cu" >/dev/null ||
    grep -aqs 'fwd_sm90' "$PREBUILT"/install/lib*/libsdpa.*
}

gtest_gpu() {
  local status=0
  for t in "$PREBUILT"/tests/cpp/test_*; do
    [ -x "$t" ] && { "$t" --gtest_brief=1 || status=1; }
  done
  # With the Hopper kernels built, dispatch prefers them on sm90: the forward and backward suites run again
  # on the sm80 kernels of the same build.
  if hopper_built; then
    for t in "$PREBUILT"/tests/cpp/test_forward_gpu "$PREBUILT"/tests/cpp/test_varlen_gpu \
             "$PREBUILT"/tests/cpp/test_backward_gpu; do
      [ -x "$t" ] && { SDPA_MAX_ARCH=80 "$t" --gtest_brief=1 || status=1; }
    done
  fi
  return $status
}

sanitize() {  # one configuration per bias keeps the sanitizers to minutes
  # Sq > Skv with (B, S, H, D) strides: lower-right leaves whole rows masked, every bias and the mask variants;
  # the split-KV decode kernels and their combine on packed GQA rows (Sq > Skv, and many splits); the Hopper
  # forward's tiles of hd64 (three consumer warpgroups) and hd256 (80 keys) on a shape of several row blocks;
  # persistent blocks of several tiles each (some empty under lower-right), every bias at hd128; dense biases and
  # masks staged by TMA with a partial last key tile
  local bin=$PREBUILT/tests/cpp/test_forward_gpu
  local filter=${SDPA_SANITIZE_FILTER:-*_bf16_hd128_b2h2x2_q113_kv17_bshd*:*_bf16_hd128_b1h6x2_q5_kv3_bshd*:*_bf16_hd128_b2h8x2_q1_kv1000_bshd*:*_bf16_hd64_b1h6x2_q1000_kv113_bhsd*:*_bf16_hd256_b1h6x2_q1000_kv113_bhsd*:*_bf16_hd128_b4h8x2_q1000_kv200_bshd*:*_bf16_hd128_b2h2x2_q130_kv208_bhsd*}
  local bwd=$PREBUILT/tests/cpp/test_backward_gpu bwd_filter=${SDPA_SANITIZE_BWD_FILTER:-*_bf16_hd128_b2h2x2_q113_kv17_bshd*}
  # variable-length batches: prefill and decode kernels on paged and packed keys, every bias
  local varlen=$PREBUILT/tests/cpp/test_varlen_gpu
  local varlen_filter=${SDPA_SANITIZE_VARLEN_FILTER:-*_bf16_hd128_prefill_page16*:*_bf16_hd128_decode_packed*:*_bf16_hd64_chunked_page64*}
  local tools=(memcheck racecheck)
  hopper_built && tools+=(synccheck)  # issue 9 asks synccheck of the Hopper kernels too
  for tool in "${tools[@]}"; do
    compute-sanitizer --tool $tool --error-exitcode 1 "$bin" --gtest_filter="$filter" --gtest_brief=1 || return 1
    [ ! -x "$varlen" ] || compute-sanitizer --tool $tool --error-exitcode 1 "$varlen" --gtest_filter="$varlen_filter" \
      --gtest_brief=1 || return 1
    # the backward: its dK/dV, dQ-atomic, deterministic dQ and row kernels, one config per bias
    [ ! -x "$bwd" ] || compute-sanitizer --tool $tool --error-exitcode 1 "$bwd" --gtest_filter="$bwd_filter" \
      --gtest_brief=1 || return 1
    # with Hopper kernels built, the run above took bwd_sm90 at hd128: the sm80 backward once more
    if hopper_built && [ -x "$bwd" ] && [ "$tool" != synccheck ]; then
      SDPA_MAX_ARCH=80 compute-sanitizer --tool $tool --error-exitcode 1 "$bwd" --gtest_filter="$bwd_filter" \
        --gtest_brief=1 || return 1
    fi
  done
}

DEFAULT_PREBUILT=$ROOT/build/gpu
if [ -f "$ROOT/.carry/gpu.tar.xz" ] && [ ! -d "$ROOT/.carry/gpu/install" ]; then
  mkdir -p "$ROOT/.carry/gpu" && tar -C "$ROOT/.carry/gpu" -xJf "$ROOT/.carry/gpu.tar.xz"
fi
[ -d "$ROOT/.carry/gpu/install" ] && DEFAULT_PREBUILT=$ROOT/.carry/gpu
PREBUILT=$(realpath -m "${SDPA_PREBUILT:-$DEFAULT_PREBUILT}")
run_step env "environment" environment
if [ -f "$PREBUILT/install/lib/cmake/sdpa/sdpaConfig.cmake" ] || [ -f "$PREBUILT/install/lib64/cmake/sdpa/sdpaConfig.cmake" ]; then
  echo "reusing prebuilt libsdpa in $PREBUILT" | tee -a "$LOG"
else
  run_step build "build libsdpa (all fused kernels)" build_libsdpa
fi
run_step python "install python package" install_python
run_step gtest "GoogleTest (GPU suites included)" gtest_gpu
run_step sanitize "compute-sanitizer memcheck + racecheck" sanitize
# The fp64 CPU oracles dominate pytest's time: spread the files over workers where pytest-xdist exists.
XDIST=(); "$PY" -c "import xdist" 2>/dev/null && XDIST=(-n "${SDPA_PYTEST_WORKERS:-8}" --dist loadfile) &&
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}  # 8 workers x torch's default threads would oversubscribe 16 cores
run_step pytest "pytest (GPU tests included)" "$PY" -m pytest "${XDIST[@]}" -v --tb=short -p no:cacheprovider -rfEs tests/python
# benchmarks/sdpa_bench runs from the repo root (here) against the installed package (budget: ~6 min on an H100)
run_step bench "benchmark" "$PY" -m benchmarks.sdpa_bench --md "$OUT/bench.md" --png "$OUT/bench.png"
run_step bench "decode benchmark" "$PY" -m benchmarks.sdpa_bench.decode --md "$OUT/decode.md"
run_step bench "serving layouts benchmark" "$PY" -m benchmarks.sdpa_bench.varlen --md "$OUT/varlen.md"
# the SM clock and board power under each plain forward (~1 min): whether the card's power cap moved a ratio
run_step bench "clocks benchmark" "$PY" -m benchmarks.sdpa_bench.clocks --md "$OUT/clocks.md"

cat "$SUMMARY"
[ -f "$OUT/bench.md" ] && cat "$OUT/bench.md"
[ -f "$OUT/decode.md" ] && cat "$OUT/decode.md"
[ -f "$OUT/varlen.md" ] && cat "$OUT/varlen.md"
[ -f "$OUT/clocks.md" ] && cat "$OUT/clocks.md"
exit $failures
