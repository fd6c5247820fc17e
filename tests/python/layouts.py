"""Query, key and value in the memory layouts callers really pass, for tests of strided and misaligned inputs.

Every layout is a view into freshly allocated buffers whose unused elements (padding, the rows past a
sequence, the element before a misaligned start) hold NaN: a kernel that reads one of them, even to
multiply it by zero, shows NaN in its output.
"""

from __future__ import annotations

import torch

LAYOUTS = ("contiguous", "bshd", "packed", "misaligned", "odd_stride", "kv_cache")
"""contiguous: (B, H, S, D) contiguous.
bshd: (B, S, H, D) buffers viewed as (B, H, S, D), what a projection followed by a reshape gives.
packed: one (B, S, Hq + 2 Hkv, D) buffer holding q, k and v (a fused QKV projection); S = max(Sq, Skv).
misaligned: contiguous, starting one element past a 16-byte boundary (data_ptr % 16 == element size).
odd_stride: (B, H, S, D + 3) buffers cut to D: the last dimension contiguous, the sequence stride odd.
kv_cache: (B, H, S + 5, D) buffers cut to S, as a slice of a longer cache; the rows past S are NaN."""

ODD_PAD = 3
CACHE_EXTRA = 5


def _nan(shape, device, dtype):
    return torch.full(shape, float("nan"), device=device, dtype=dtype)


def _buffers(layout, b, hq, hkv, sq, skv, d, device, dtype):
    if layout == "contiguous":
        return [_nan((b, hq, sq, d), device, dtype), _nan((b, hkv, skv, d), device, dtype),
                _nan((b, hkv, skv, d), device, dtype)]
    if layout == "bshd":
        return [_nan((b, sq, hq, d), device, dtype), _nan((b, skv, hkv, d), device, dtype),
                _nan((b, skv, hkv, d), device, dtype)]
    if layout == "packed":
        return [_nan((b, max(sq, skv), hq + 2 * hkv, d), device, dtype)]
    if layout == "misaligned":
        return [_nan((n + 1,), device, dtype) for n in (b * hq * sq * d, b * hkv * skv * d, b * hkv * skv * d)]
    if layout == "odd_stride":
        return [_nan((b, hq, sq, d + ODD_PAD), device, dtype), _nan((b, hkv, skv, d + ODD_PAD), device, dtype),
                _nan((b, hkv, skv, d + ODD_PAD), device, dtype)]
    if layout == "kv_cache":
        return [_nan((b, hq, sq + CACHE_EXTRA, d), device, dtype), _nan((b, hkv, skv + CACHE_EXTRA, d), device, dtype),
                _nan((b, hkv, skv + CACHE_EXTRA, d), device, dtype)]
    raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")


def _views(layout, buffers, b, hq, hkv, sq, skv, d):
    if layout == "contiguous":
        return tuple(buffers)
    if layout == "bshd":
        return tuple(t.transpose(1, 2) for t in buffers)
    if layout == "packed":
        (buf,) = buffers
        return (buf[:, :sq, :hq].transpose(1, 2), buf[:, :skv, hq:hq + hkv].transpose(1, 2),
                buf[:, :skv, hq + hkv:].transpose(1, 2))
    if layout == "misaligned":
        shapes = [(b, hq, sq, d), (b, hkv, skv, d), (b, hkv, skv, d)]
        return tuple(buf[1:].view(shape) for buf, shape in zip(buffers, shapes))
    if layout == "odd_stride":
        return tuple(t[..., :d] for t in buffers)
    seqs = (sq, skv, skv)  # kv_cache
    return tuple(t[:, :, :s] for t, s in zip(buffers, seqs))


def make_qkv(batch, heads_q, heads_kv, seq_q, seq_kv, dim, layout="contiguous", device="cpu", dtype=torch.float32,
             generator: torch.Generator | None = None, requires_grad=False):
    """(q, k, v) of shapes (B, Hq, Sq, D), (B, Hkv, Skv, D) x 2 in ``layout``, holding standard normal values
    drawn on the CPU from ``generator`` (the global generator if None), so a seed gives the same values on
    every device. With ``requires_grad`` the underlying buffers are the leaves and q, k, v are views of them
    (what a model's projections give); use torch.autograd.grad(out, (q, k, v), ...) for their gradients."""
    dims = (batch, heads_q, heads_kv, seq_q, seq_kv, dim)
    shapes = [(batch, heads_q, seq_q, dim), (batch, heads_kv, seq_kv, dim), (batch, heads_kv, seq_kv, dim)]
    values = [torch.randn(shape, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)
              for shape in shapes]
    buffers = _buffers(layout, *dims, device, dtype)
    with torch.no_grad():
        for view, value in zip(_views(layout, buffers, *dims), values):
            view.copy_(value)
    if requires_grad:
        for buf in buffers:
            buf.requires_grad_(True)
    return _views(layout, buffers, *dims)


def describe(t: torch.Tensor) -> str:
    """Shape, strides and 16-byte alignment of a tensor, for failure messages."""
    return f"shape={tuple(t.shape)} stride={t.stride()} data_ptr%16={t.data_ptr() % 16}"
