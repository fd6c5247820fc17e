#!/usr/bin/env bash
# Nsight Compute on one forward case, sdpa_core's Hopper kernel beside torch's cuDNN kernel, for the reasons
# behind a gap in benchmarks/results.md: builds only the kernels the case needs (bf16, one trait and head dim),
# installs the package on them, then profiles one launch of each (after warm-up) with the throughput,
# warp-stall and occupancy sections. Writes $OUT/ncu_<contender>.txt (or ./ncu_out/).
#   scripts/ncu_forward.sh [trait, default CausalUpperLeft] [head dim, default 128]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/ncu_out}; mkdir -p "$OUT"
TRAIT=${1:-CausalUpperLeft}
HD=${2:-128}
B=/tmp/sdpa-ncu
{
  cmake -S . -B $B -G Ninja -DSDPA_ENABLE_CUDA=ON -DSDPA_CUDA_ARCHS=90 -DSDPA_KERNEL_BIASES="$TRAIT" \
    -DSDPA_KERNEL_DTYPES=bf16 -DSDPA_KERNEL_HEAD_DIMS="$HD" -DSDPA_BUILD_BACKWARD=OFF -DSDPA_BUILD_DECODE=OFF \
    -DCMAKE_INSTALL_PREFIX=$B/install && cmake --build $B && cmake --install $B &&
  python3 -m pip install -q --no-build-isolation --no-deps --target /tmp/sdpa-ncu-site . -C build-dir=/tmp/sdpa-ncu-py \
    -C cmake.define.SDPA_USE_INSTALLED=ON -C cmake.define.sdpa_DIR=$B/install/lib/cmake/sdpa
} >"$OUT/build.txt" 2>&1 || { tail -30 "$OUT/build.txt"; exit 1; }
export PYTHONPATH=/tmp/sdpa-ncu-site:${PYTHONPATH:-}
# One case: B=2, H=16, S=8192, bf16; causal unless the trait is NoBias. Five calls: ncu profiles the fourth.
cat >"$OUT/case.py" <<'PY'
import sys, torch, sdpa_core
from torch.nn.attention import SDPBackend, sdpa_kernel
who, causal, hd = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
q, k, v = (torch.randn(2, 16, 8192, hd, device="cuda", dtype=torch.bfloat16) for _ in range(3))
with torch.no_grad():
    for _ in range(5):
        if who == "own":
            with sdpa_core.dispatch_policy("own"):
                sdpa_core.scaled_dot_product_attention(q, k, v, is_causal=causal)
        else:
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
torch.cuda.synchronize()
print(sdpa_core.explain(q, k, v, is_causal=causal) if who == "own" else "torch cuDNN")
PY
causal=$([ "$TRAIT" = NoBias ] && echo 0 || echo 1)
SECTIONS=(--section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis
          --section MemoryWorkloadAnalysis_Tables --section WarpStateStats --section Occupancy --section LaunchStats
          --section SchedulerStats)
ncu -k regex:flash_fwd_kernel_sm90 --launch-skip 3 --launch-count 1 "${SECTIONS[@]}" \
  python3 "$OUT/case.py" own $causal $HD >"$OUT/ncu_own.txt" 2>&1
ncu -k regex:'(cudnn|sdpa|fmha|flash)' --launch-skip 3 --launch-count 1 "${SECTIONS[@]}" \
  python3 "$OUT/case.py" cudnn $causal $HD >"$OUT/ncu_cudnn.txt" 2>&1
grep -E "^  [a-zA-Z_].*\(|Duration|Compute \(SM\) Throughput|Memory Throughput|Registers Per Thread|Achieved Occupancy|Issue Slots Busy|No Eligible|Warp Cycles Per Issued|Executed Ipc Active|Dynamic Shared" \
  "$OUT/ncu_own.txt" "$OUT/ncu_cudnn.txt" | cut -c1-160
