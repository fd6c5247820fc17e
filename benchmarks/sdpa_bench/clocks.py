"""SM clock and board power while one forward runs back to back: sdpa_core's own kernel beside torch's.

A kernel that needs fewer cycles than another at a fixed clock (Nsight Compute locks it) can still lose at
the card's own clocks if it draws more power and the card lowers its clock to stay under its power limit.
This runs each contender's forward in a loop for a few seconds while `nvidia-smi` samples the SM clock,
the board power and the clock-event reasons, and prints TFLOP/s, the median clock and power, and TFLOP/s
per GHz (the work done per cycle, which a power cap does not change).

    python -m benchmarks.sdpa_bench.clocks --cases d128-s8k,d256-s8k --md clocks.md
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time

import torch

from .cases import CASES_BY_NAME, make_inputs
from .contenders import CUDNN, SDPA_OWN, TORCH_DEFAULT, contenders

QUERY = "clocks.sm,power.draw,clocks_event_reasons.active"
DEFAULT_CASES = "d128-s8k,d128-s8k-causal,d256-s8k,d256-s8k-causal"
COLUMNS = (SDPA_OWN, CUDNN, TORCH_DEFAULT)


def sampled_loop(fn, seconds: float) -> tuple[float, list[tuple[float, float, int]]]:
    """Runs fn back to back for about `seconds` under nvidia-smi sampling every 50 ms; returns the mean
    milliseconds per call (CUDA events) and the (MHz, W, reasons) samples of the loop's second half."""
    with tempfile.NamedTemporaryFile("r", suffix=".csv") as log:
        smi = subprocess.Popen(["nvidia-smi", f"--query-gpu={QUERY}", "--format=csv,noheader,nounits",
                                "-lms", "50", "-f", log.name])
        try:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            calls, t0 = 0, time.monotonic()
            start.record()
            while time.monotonic() - t0 < seconds:
                for _ in range(10):
                    fn()
                calls += 10
                torch.cuda.synchronize()  # keeps the host clock and the device's work in step
            end.record()
            torch.cuda.synchronize()
        finally:
            smi.terminate()
            smi.wait()
        samples = [s for s in map(_sample, log.read().splitlines()) if s is not None]
    return start.elapsed_time(end) / calls, samples[len(samples) // 2:]


def _sample(line: str) -> tuple[float, float, int] | None:
    """One nvidia-smi line as (MHz, W, reason bits); None for a line with a field the driver did not give."""
    try:
        mhz, watts, reasons = (field.strip() for field in line.split(","))
        return float(mhz), float(watts), int(reasons, 16)
    except ValueError:  # "[N/A]", "[Not Supported]", a partial line
        return None


def measure(case_name: str, seconds: float) -> list[tuple[str, float, float, float, int]]:
    case = CASES_BY_NAME[case_name]
    t = make_inputs(case, torch.device("cuda"), grad=False).for_mode("fwd")
    by_name = {c.name: c for c in contenders(compile_flex=False)}
    rows = []
    with torch.no_grad():
        for name in COLUMNS:
            runner = by_name[name].build(case, t)
            with runner.ctx():
                for _ in range(5):  # warm-up: module load, workspace, cuDNN plans
                    runner.fn()
                torch.cuda.synchronize()
                ms, samples = sampled_loop(runner.fn, seconds)
            tflops = case.flops("fwd") / (ms * 1e-3) / 1e12
            mhz = statistics.median(s[0] for s in samples) if samples else float("nan")
            watts = statistics.median(s[1] for s in samples) if samples else float("nan")
            reasons = 0
            for s in samples:
                reasons |= s[2]
            rows.append((name, tflops, mhz, watts, reasons))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=DEFAULT_CASES)
    parser.add_argument("--seconds", type=float, default=3.0, help="loop length per contender")
    parser.add_argument("--md", default="", help="write the table here too")
    args = parser.parse_args()
    lines = [f"# SM clock and power during a forward loop ({torch.cuda.get_device_name()}, "
             f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, torch {torch.__version__})", "",
             "Medians of nvidia-smi samples (50 ms) over the second half of each loop; reasons: the OR of the "
             "clock-event reason bits seen (0x4 software power cap, 0x20 software thermal, 0x40 hardware "
             "thermal, 0x80 hardware power brake).", "",
             "| case | contender | TFLOP/s | SM MHz | W | TFLOP/s per GHz | reasons |", "|---|---|---|---|---|---|---|"]
    for case_name in args.cases.split(","):
        for name, tflops, mhz, watts, reasons in measure(case_name, args.seconds):
            lines.append(f"| {case_name} | {name} | {tflops:.0f} | {mhz:.0f} | {watts:.0f} | "
                         f"{tflops / (mhz / 1000):.0f} | {reasons:#x} |")
    text = "\n".join(lines)
    print(text)
    if args.md:
        with open(args.md, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
