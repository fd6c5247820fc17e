#!/usr/bin/env bash
# Where a decode step's time goes (issue 8): builds only the kernels the decode benchmark needs (bf16, hd128,
# the serving biases, no Hopper prefill, no backward), installs the package on them, then
#   - benchmarks.sdpa_bench.decode_probe: the read ceiling, forced split counts, split/combine kernel times;
#   - benchmarks.sdpa_bench.decode: the decode table beside torch's backends;
#   - Nsight Compute on one split-kernel launch and its combine for B=8 Sq=1 Skv=8k and B=1 Skv=32k.
# Writes $OUT/{probe.md,decode.md,ncu_*.txt} (or ./ncu_decode_out/).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/ncu_decode_out}; mkdir -p "$OUT"
B=/tmp/sdpa-ncu-decode
{
  cmake -S . -B $B -G Ninja -DSDPA_ENABLE_CUDA=ON -DSDPA_CUDA_ARCHS=90 \
    -DSDPA_KERNEL_BIASES="CausalLowerRight;AlibiCausalLowerRight;DenseBias" -DSDPA_KERNEL_DTYPES=bf16 \
    -DSDPA_KERNEL_HEAD_DIMS=128 -DSDPA_BUILD_BACKWARD=OFF -DSDPA_BUILD_SM90=OFF -DSDPA_BUILD_TESTS=OFF \
    -DCMAKE_INSTALL_PREFIX=$B/install && cmake --build $B && cmake --install $B &&
  python3 -m pip install -q --no-build-isolation --no-deps --target /tmp/sdpa-ncu-decode-site . \
    -C build-dir=/tmp/sdpa-ncu-decode-py -C cmake.define.SDPA_USE_INSTALLED=ON -C cmake.define.sdpa_DIR=$B/install/lib/cmake/sdpa
} >"$OUT/build.txt" 2>&1 || { tail -30 "$OUT/build.txt"; exit 1; }
export PYTHONPATH=/tmp/sdpa-ncu-decode-site:${PYTHONPATH:-}
python3 -m benchmarks.sdpa_bench.decode_probe --md "$OUT/probe.md" >"$OUT/probe.txt" 2>&1; cat "$OUT/probe.md"
[ -z "${DECODE_TABLE:-}" ] || {
  python3 -m benchmarks.sdpa_bench.decode --md "$OUT/decode.md" >/dev/null 2>&1; sed -n 5,14p "$OUT/decode.md"; }
cat >"$OUT/case.py" <<'PY'
import sys, torch
from sdpa_core import _kernels
from sdpa_core._kernel_bias import KernelBias
from sdpa_core.variants import CausalVariant
b, skv = int(sys.argv[1]), int(sys.argv[2])
q = torch.randn(b, 32, 1, 128, device="cuda", dtype=torch.bfloat16)
k, v = (torch.randn(b, 8, skv, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
bias = KernelBias.causal_only(CausalVariant.LOWER_RIGHT)
for _ in range(5):
    _kernels.try_forward(q, k, v, bias, 128 ** -0.5)
torch.cuda.synchronize()
PY
SECTIONS=(--section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy
          --section LaunchStats --section SchedulerStats)
[ -n "${SKIP_NCU:-}" ] && exit 0
for c in "8 8192" "1 32768"; do
  set -- $c
  ncu -k regex:'flash_decode|split_kv_combine' --launch-skip 6 --launch-count 2 "${SECTIONS[@]}" \
    python3 "$OUT/case.py" $1 $2 >"$OUT/ncu_b$1_s$2.txt" 2>&1
  grep -E "^  [a-zA-Z_].*\(|Duration|DRAM Throughput|Memory Throughput|L2 Hit|Registers Per Thread|Achieved Occupancy|Issue Slots Busy|No Eligible|Warp Cycles Per Issued|Block Limit|Waves Per SM|Dynamic Shared|Grid Size" \
    "$OUT/ncu_b$1_s$2.txt" | cut -c1-150
done
