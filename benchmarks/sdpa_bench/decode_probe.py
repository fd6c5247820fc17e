"""Where a decode step's time goes, beside the decode table: the same cases as ``decode.py`` with

- read ceilings: plain kernels reading the same number of bytes, timed the same way (L2 flushed before
  every rep): torch's ``sum`` over a buffer of K+V's size, and the best of a few grid-stride triton read
  kernels. What they reach is about the most any decode kernel can on this card, under this timing;
- our split kernel at several forced split counts (``num_splits``) beside the automatic choice;
- one profiled call: the split and combine kernels' own durations against the call's wall time on the GPU.

    python -m benchmarks.sdpa_bench.decode_probe [--md probe.md]
"""

from __future__ import annotations

import torch

import sdpa_core
from sdpa_core import _kernels
from sdpa_core._kernel_bias import KernelBias
from sdpa_core.variants import CausalVariant

from .decode import CASES, HBM_PEAK_GBS, DecodeCase, _inputs, _our_bias, _torch, run_cli
from .timing import event_ms, median_ms

SPLITS = [1, 2, 4, 8, 16, 32, 64]


def _kernel_bias(case: DecodeCase, slopes) -> KernelBias:
    """The case's bias as libsdpa takes it (``slopes`` holds the key-padding mask for that case)."""
    if case.padding:
        return KernelBias.dense_tensor(slopes, None)
    if slopes is not None:
        return KernelBias.alibi(slopes, CausalVariant.LOWER_RIGHT)
    return KernelBias.causal_only(CausalVariant.LOWER_RIGHT)


def _read_ceiling_gbs(case: DecodeCase, warmup_ms: float, rep_ms: float) -> tuple[float, float]:
    """(torch sum, best triton read kernel) GB/s over a buffer of K+V's size."""
    buf = torch.randn(case.kv_bytes // 2, device="cuda", dtype=torch.bfloat16)
    gbs = lambda ms: case.kv_bytes / ms / 1e6
    torch_sum = gbs(median_ms(lambda: buf.sum(dtype=torch.float32), warmup_ms, rep_ms, []))
    best = 0.0
    try:
        kernel = _triton_read_kernel()
        sms = torch.cuda.get_device_properties(0).multi_processor_count
        out = torch.empty(sms * 16, device="cuda", dtype=torch.float32)
        for block, per_sm, warps in [(4096, 4, 8), (8192, 2, 8), (8192, 4, 8), (16384, 2, 16)]:
            run = lambda: kernel[(sms * per_sm,)](buf, out, buf.numel(), BLOCK=block, num_warps=warps)
            best = max(best, gbs(median_ms(run, warmup_ms, rep_ms, [])))
    except Exception:  # noqa: BLE001 - no triton: the torch column stands alone
        pass
    return torch_sum, best


def _triton_read_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def read(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
        # Grid-stride: at any moment the programs read neighbouring blocks, a plain streaming pattern.
        pid, programs = tl.program_id(0), tl.num_programs(0)
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(pid * BLOCK, n, programs * BLOCK):
            offs = start + tl.arange(0, BLOCK)
            acc += tl.load(x_ptr + offs, mask=offs < n, other=0.0).to(tl.float32)
        tl.store(out_ptr + pid, tl.sum(acc, axis=0))
    return read


def _split_gbs(case: DecodeCase, q, k, v, bias, splits: int, warmup_ms: float, rep_ms: float) -> float:
    scale = q.shape[-1] ** -0.5
    if _kernels.try_forward(q, k, v, bias, scale, num_splits=splits) is None:
        return float("nan")
    ms = median_ms(lambda: _kernels.try_forward(q, k, v, bias, scale, num_splits=splits), warmup_ms, rep_ms, [])
    return case.kv_bytes / ms / 1e6


def _median_ms_clean_l2(fn, reps: int = 50) -> float:
    """Median ms of fn after the L2 was flushed *clean*: triton's flush (zeroing 256 MB) leaves the L2 full of
    dirty lines that the timed call then writes back to DRAM while it reads; here a read of 128 MB after the
    zeroing evicts them first, so the call starts on a cold L2 that owes DRAM nothing."""
    flush = torch.empty(256 * 2**20 // 4, dtype=torch.int32, device="cuda")
    clean = torch.ones(128 * 2**20 // 4, dtype=torch.int32, device="cuda")
    times = []
    for _ in range(reps):
        flush.zero_()
        clean.sum()
        times.append(event_ms(fn))
    return sorted(times)[len(times) // 2]


def _kernel_split(q, k, v, bias) -> str:
    """The split and combine kernels' GPU time in one call (profiler), in microseconds."""
    scale = q.shape[-1] ** -0.5
    for _ in range(3):
        _kernels.try_forward(q, k, v, bias, scale)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            _kernels.try_forward(q, k, v, bias, scale)
        torch.cuda.synchronize()
    parts = []
    for e in prof.key_averages():  # kernels only; the profiler's event API moves between torch versions
        if not hasattr(e, "device_time_total"):
            return "-"
        if e.device_type == torch.autograd.DeviceType.CUDA and e.count:
            name = "split" if "decode" in e.key else "combine" if "combine" in e.key else e.key[:30]
            parts.append(f"{name} {e.device_time_total / e.count:.1f}")
    return ", ".join(parts)


def run(warmup_ms: float, rep_ms: float) -> str:
    name = torch.cuda.get_device_name()
    peak = next((v for key, v in HBM_PEAK_GBS.items() if key in name), None)
    lines = [f"# Decode probe ({name}, torch {torch.__version__})", "",
             "GB/s of K+V read, L2 flushed before every rep. Ceilings: torch summing a buffer of the same size; the "
             "best triton grid-stride read kernel.", "",
             "| case | torch sum | triton read | auto, clean L2 | torch default, clean L2 | auto (splits) | " + " | ".join(f"s={s}" for s in SPLITS) + " | kernels, us |",
             "|---" * (len(SPLITS) + 7) + "|"]
    for case in CASES:
        q, k, v, slopes = _inputs(case, "cuda")
        with sdpa_core.dispatch_policy("own"):
            why = sdpa_core.explain(q, k, v, attn_mask=_our_bias(case, slopes), enable_gqa=True)
        parts = next((line for line in why.splitlines() if "parts" in line), "")
        auto_splits = parts.split(" parts")[0].rsplit(" ", 1)[-1] if parts else "?"
        bias = _kernel_bias(case, slopes)
        auto = _split_gbs(case, q, k, v, bias, 0, warmup_ms, rep_ms)
        cells = [f"{_split_gbs(case, q, k, v, bias, s, warmup_ms, rep_ms):.0f}" for s in SPLITS]
        pct = lambda x: f" ({100 * x / peak:.0f}%)" if peak else ""
        torch_sum, triton_read = _read_ceiling_gbs(case, warmup_ms, rep_ms)
        scale = q.shape[-1] ** -0.5
        clean = case.kv_bytes / _median_ms_clean_l2(lambda: _kernels.try_forward(q, k, v, bias, scale)) / 1e6
        torch_clean = case.kv_bytes / _median_ms_clean_l2(_torch(case, q, k, v, slopes, None)) / 1e6
        lines.append(f"| {case.label} | {torch_sum:.0f}{pct(torch_sum)} | {triton_read:.0f}{pct(triton_read)} | "
                     f"{clean:.0f}{pct(clean)} | {torch_clean:.0f} | {auto:.0f} ({auto_splits}) | " + " | ".join(cells) +
                     f" | {_kernel_split(q, k, v, bias)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    run_cli(__doc__, run, argv)


if __name__ == "__main__":
    main()
