"""Where sdpa_core's host time goes on small calls (the RFC's "negligible dispatch overhead"): the host cost
table of the extras (``extras.host_overhead``) at two shapes, then a cProfile of each sdpa_core call with
the functions that take the most time of their own.

    python -m benchmarks.sdpa_bench.host_probe [--md host.md]
"""

from __future__ import annotations

import cProfile
import io
import pstats

import torch
import torch.nn.functional as F

import sdpa_core

from .decode import run_cli
from .extras import _cpu_us_per_call, policy


def _calls(q, k, v):
    """(name, function, policy or None for torch, sdpa_core keyword arguments)."""
    alibi = sdpa_core.AlibiBias(sdpa_core.alibi_slopes(q.shape[1]).cuda(), q.shape[2], k.shape[2],
                                causal=sdpa_core.CausalVariant.LOWER_RIGHT)
    lower_right = sdpa_core.causal_lower_right(q.shape[2], k.shape[2])
    gqa = q.shape[1] != k.shape[1]
    calls = [("torch SDPA, no mask", lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa), None, {}),
             ("torch SDPA, is_causal",
              lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa), None, {})]
    for label, pol, kw in [("no mask", "auto", {}), ("is_causal", "auto", {"is_causal": True}),
                           ("lower-right", "auto", {"attn_mask": lower_right}),
                           ("AlibiBias lower-right", "auto", {"attn_mask": alibi}), ("no mask", "own", {})]:
        kw = dict(kw, enable_gqa=gqa)
        name = f"sdpa_core{' own' if pol == 'own' else ''}, {label}"
        calls.append((name, lambda kw=kw: sdpa_core.scaled_dot_product_attention(q, k, v, **kw), pol, kw))
    return calls


def _profile(fn, name: str, n: int = 3000) -> str:
    with policy(name), torch.no_grad():
        for _ in range(50):
            fn()
        torch.cuda.synchronize()
        prof = cProfile.Profile()
        prof.enable()
        for i in range(n):
            fn()
            if i % 20 == 19:
                torch.cuda.synchronize()
        prof.disable()
        torch.cuda.synchronize()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(14)
    return text.getvalue()


def run() -> str:
    shapes = {"1x1x16x64 (the extras' call)": ((1, 1, 16, 64), (1, 1, 16, 64)),
              "decode 1x32x1x128, kv 1x8x2048x128": ((1, 32, 1, 128), (1, 8, 2048, 128))}
    lines = [f"# Host probe ({torch.cuda.get_device_name()}, torch {torch.__version__})", ""]
    profiles = []
    for label, (qs, ks) in shapes.items():
        q = torch.randn(qs, device="cuda", dtype=torch.bfloat16)
        k, v = (torch.randn(ks, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        lines += [f"## {label}", "", "| call | host us/call | path |", "|---|---|---|"]
        for name, fn, pol, kw in _calls(q, k, v):
            ctx = (lambda: policy(pol)) if pol else (lambda: policy("auto"))
            us = _cpu_us_per_call(fn, ctx, 2000)
            path = ""
            if pol:
                with policy(pol):
                    path = " / ".join(sdpa_core.explain(q, k, v, **kw).splitlines()[:2])[:140]
                profiles.append(f"### {label}: {name}\n\n```\n{_profile(fn, pol)}```\n")
            lines.append(f"| {name} | {'n/a' if us is None else f'{us:.1f}'} | {path} |")
        lines.append("")
    return "\n".join(lines + profiles) + "\n"


def main(argv=None) -> None:
    run_cli(__doc__, lambda warmup_ms, rep_ms: run(), argv)  # --warmup-ms / --rep-ms do not apply here


if __name__ == "__main__":
    main()
