"""The independent oracle: masks built by hand from the formulas, attention in float64 on the CPU.

Nothing here imports sdpa_core, so a bug in its mask builders or kernels cannot hide in the reference.
"""

from __future__ import annotations

import math

import torch


def attention_fp64(q, k, v, *, causal: str | None = None, slopes=None, dense=None, scale=None):
    """causal: None, "upper_left" (keep j <= i) or "lower_right" (keep j <= i + Skv - Sq).
    slopes: (H,) or (B, H) ALiBi slopes: adds -slope * |i + Skv - Sq - j|.
    dense: bool mask (True = keep) or additive float tensor broadcastable to (B, H, Sq, Skv)."""
    q, k, v = (t.detach().to("cpu", torch.float64) for t in (q, k, v))
    batch, heads, seq_q, dim = q.shape
    seq_kv = k.shape[2]
    group = heads // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    scale = 1.0 / math.sqrt(dim) if scale is None else scale
    s = torch.einsum("bhid,bhjd->bhij", q, k) * scale
    i = torch.arange(seq_q, dtype=torch.float64).view(seq_q, 1)
    j = torch.arange(seq_kv, dtype=torch.float64).view(1, seq_kv)
    if slopes is not None:
        sl = slopes.detach().to("cpu", torch.float64)
        sl = sl.view(1, heads, 1, 1) if sl.dim() == 1 else sl.view(batch, heads, 1, 1)
        s = s - sl * (i + (seq_kv - seq_q) - j).abs()
    if dense is not None:
        d = dense.detach().cpu()
        s = s.masked_fill(~d, float("-inf")) if d.dtype == torch.bool else s + d.to(torch.float64)
    if causal == "upper_left":
        s = s.masked_fill(j > i, float("-inf"))
    elif causal == "lower_right":
        s = s.masked_fill(j > i + (seq_kv - seq_q), float("-inf"))
    dead = torch.isneginf(s).all(dim=-1, keepdim=True)
    p = torch.softmax(s.masked_fill(dead, 0.0), dim=-1).masked_fill(dead, 0.0)
    return p @ v


TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 4e-3, torch.bfloat16: 2.5e-2}


def assert_close(out, ref, dtype):
    assert out.shape == ref.shape, (out.shape, ref.shape)
    out64 = out.detach().to("cpu", torch.float64)
    assert not torch.isnan(out64).any(), "output has NaN"
    err = (out64 - ref).abs().max().item()
    assert err <= TOLERANCE[dtype], f"max abs error {err:.3g} > {TOLERANCE[dtype]:.1g} for {dtype}"
