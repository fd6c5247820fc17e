"""Extras under the main table (CUDA only; --no-extras skips them).

- Host cost: median CPU time of one call at 1x1x16x64 bf16, torch SDPA next to sdpa_core, in short
  bursts with the GPU drained in between, so a full launch queue never makes a call wait on the GPU.
- Peak memory: ``torch.cuda.max_memory_allocated`` above the inputs for one sdpa_core call at B=1, H=16,
  D=128, next to the q+k+v+out bytes and one H x Sq x Skv bf16 matrix, which a materializing path needs.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

import sdpa_core

from .cases import Case, make_inputs
from .contenders import has_policy, one_line, policy, sdpa_core_args


def host_overhead(quick: bool) -> list[tuple[str, float | None]]:
    q = torch.randn(1, 1, 16, 64, device="cuda", dtype=torch.bfloat16)
    alibi = sdpa_core.AlibiBias(sdpa_core.alibi_slopes(1).cuda(), 16, 16,
                                causal=sdpa_core.CausalVariant.UPPER_LEFT)
    sdpa = sdpa_core.scaled_dot_product_attention
    calls = [
        ("torch SDPA, no mask", lambda: F.scaled_dot_product_attention(q, q, q), contextlib.nullcontext),
        ("torch SDPA, is_causal", lambda: F.scaled_dot_product_attention(q, q, q, is_causal=True),
         contextlib.nullcontext),
    ]
    for name in ("auto", "own") if has_policy() else ("auto",):
        label = "sdpa_core" + ("" if name == "auto" else " own")
        ctx = lambda name=name: policy(name)
        calls += [
            (f"{label}, no mask", lambda: sdpa(q, q, q), ctx),
            (f"{label}, is_causal", lambda: sdpa(q, q, q, is_causal=True), ctx),
            (f"{label}, AlibiBias causal", lambda: sdpa(q, q, q, attn_mask=alibi), ctx),
        ]
    n = 200 if quick else 2000
    return [(name, _cpu_us_per_call(fn, ctx, n)) for name, fn, ctx in calls]


def _cpu_us_per_call(fn: Callable[[], object], ctx, n: int) -> float | None:
    burst = 20
    try:
        with ctx(), torch.no_grad():
            for _ in range(burst):
                fn()
            torch.cuda.synchronize()
            per_call = []
            for _ in range(max(1, n // burst)):
                t0 = time.perf_counter_ns()
                for _ in range(burst):
                    fn()
                per_call.append((time.perf_counter_ns() - t0) / burst)
                torch.cuda.synchronize()
        return statistics.median(per_call) / 1e3
    except Exception:  # noqa: BLE001 - a refused call just shows n/a
        return None


def peak_memory(quick: bool) -> list[dict]:
    """If the path held an S x S score matrix, "peak above inputs" would reach the S x S column."""
    s = 4096 if quick else 16384
    cases = [
        Case("mem-causal", f"causal S={s}", 128, s, s, "causal"),
        Case("mem-alibi", f"ALiBi+causal S={s}", 128, s, s, "alibi_causal"),
        Case("mem-lr", f"causal lower-right Sq={s // 4} Skv={s}", 128, s // 4, s, "lower_right"),
    ]
    rows = []
    for case in cases:
        t = make_inputs(case, torch.device("cuda"), grad=False)
        # The budgets give B=1, H=16 at Skv=16k; --quick's Skv=4k gives B=4, so keep one.
        t.q, t.k, t.v = (x[:1] for x in (t.q, t.k, t.v))
        mask, causal = sdpa_core_args(case, t)
        rows.append(_measure_peak(case, t.q, t.k, t.v, lambda q=t.q, k=t.k, v=t.v: sdpa_core.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal)))
        del t
        torch.cuda.empty_cache()
    return rows


def _measure_peak(case: Case, q, k, v, fn) -> dict:
    elem = q.element_size()
    row = {"case": case.label, "io": (2 * q.numel() + k.numel() + v.numel()) * elem,  # q, k, v, out
           "sxs": q.shape[1] * case.sq * case.skv * elem, "peak": None, "reason": ""}
    try:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            out = fn()
        torch.cuda.synchronize()
        row["peak"] = torch.cuda.max_memory_allocated() - base
        del out
    except Exception as e:  # noqa: BLE001
        row["reason"] = one_line(e)
    return row


def overhead_table(overhead: list[tuple[str, float | None]]) -> str:
    lines = ["| call (1x1x16x64 bf16) | host us/call |", "|---|---|"]
    lines += [f"| {name} | {'n/a' if us is None else f'{us:.1f}'} |" for name, us in overhead]
    return "\n".join(lines)


def memory_table(mem: list[dict]) -> str:
    mib = lambda b: f"{b / 2**20:.0f}"
    lines = ["| sdpa_core call (B=1, H=16, D=128) | q+k+v+out MiB | peak above inputs MiB "
             "| one H x Sq x Skv bf16 matrix MiB |", "|---|---|---|---|"]
    for r in mem:
        peak = mib(r["peak"]) if r["peak"] is not None else f"n/a ({r['reason'].replace('|', '/')})"
        lines.append(f"| {r['case']} | {mib(r['io'])} | {peak} | {mib(r['sxs'])} |")
    return "\n".join(lines)


def extras_markdown(quick: bool) -> list[str]:
    return [overhead_table(host_overhead(quick)), memory_table(peak_memory(quick))]
