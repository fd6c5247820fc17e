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
    if dense is not None:
        dense = dense.detach().cpu()
        dense = dense if dense.dtype == torch.bool else dense.to(torch.float64)
    out, _ = _differentiable_attention(q, k, v, causal=causal, slopes=slopes, dense=dense, scale=scale,
                                       masked_below=-math.inf, lowp=False)  # additive values as they are
    return out

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 4e-3, torch.bfloat16: 2.5e-2}


def assert_close(out, ref, dtype):
    assert out.shape == ref.shape, (out.shape, ref.shape)
    out64 = out.detach().to("cpu", torch.float64)
    assert not torch.isnan(out64).any(), "output has NaN"
    err = (out64 - ref).abs().max().item()
    assert err <= TOLERANCE[dtype], f"max abs error {err:.3g} > {TOLERANCE[dtype]:.1g} for {dtype}"


# --- Large negative additive values, and gradients -----------------------------------------------------------

MASKED_BELOW = -2.35e38
"""An additive bias value below this is a mask: v * log2(e) overflows float32, so a kernel working in the
log2 domain sees -inf. torch.finfo(bfloat16 / float32).min are below it; finfo(float16).min (-65504) is
an ordinary number."""


def mask_large_negatives(dense, masked_below: float = MASKED_BELOW):
    """A float64 CPU copy of a float bias with every value below ``masked_below`` replaced by -inf.
    Bool masks come back unchanged."""
    if dense is None or dense.dtype == torch.bool:
        return dense
    d = dense.detach().to("cpu", torch.float64)
    return d.masked_fill(d < masked_below, float("-inf"))


def attention_fp64_masked(q, k, v, *, masked_below: float = MASKED_BELOW, dense=None, **kwargs):
    """attention_fp64 where additive bias values below ``masked_below`` mask their key, as -inf does."""
    return attention_fp64(q, k, v, dense=mask_large_negatives(dense, masked_below), **kwargs)


def _differentiable_attention(q, k, v, *, causal, slopes, dense, scale, masked_below, lowp):
    """softmax(q k^T * scale + bias) v as plain torch ops that autograd can follow; fully masked rows give
    0 with zero gradients. With ``lowp`` the matrix products are rounded to the inputs' dtype (a
    low-precision yardstick for tolerances; scores, ALiBi distances and softmax stay float32), else
    everything is float64."""
    batch, heads, seq_q, dim = q.shape
    seq_kv = k.shape[2]
    group = heads // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    scale = 1.0 / math.sqrt(dim) if scale is None else scale
    wide = torch.float32 if lowp else torch.float64
    s = (q @ k.transpose(-1, -2)).to(wide) * scale
    i = torch.arange(seq_q, device=q.device, dtype=wide).view(seq_q, 1)
    j = torch.arange(seq_kv, device=q.device, dtype=wide).view(1, seq_kv)
    if slopes is not None:
        sl = slopes.detach().to(q.device, wide)
        sl = sl.view(1, heads, 1, 1) if sl.dim() == 1 else sl.view(batch, heads, 1, 1)
        s = s - sl * (i + (seq_kv - seq_q) - j).abs()
    if dense is not None:
        if dense.dtype == torch.bool:
            s = s.masked_fill(~dense, float("-inf"))
        else:
            # low precision: the bias gradient is rounded per element before its broadcast dims are summed,
            # as kernels that write a (B, H, Sq, Skv) bias gradient do
            d = dense.expand(batch, heads, seq_q, seq_kv).to(wide) if lowp else dense.to(wide)
            s = s + torch.where(d < masked_below, torch.full_like(d, float("-inf")), d)
    if causal == "upper_left":
        s = s.masked_fill(j > i, float("-inf"))
    elif causal == "lower_right":
        s = s.masked_fill(j > i + (seq_kv - seq_q), float("-inf"))
    dead = torch.isneginf(s).all(dim=-1, keepdim=True)
    p = torch.softmax(s.masked_fill(dead, 0.0), dim=-1).masked_fill(dead, 0.0)
    return p.to(v.dtype) @ v, dead


def _attention_with_grads(q, k, v, grad_out, dense, kwargs, lowp):
    if lowp:
        leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
        grad_out = grad_out.detach().to(q.device, q.dtype)
    else:
        leaves = [t.detach().to("cpu", torch.float64).requires_grad_(True) for t in (q, k, v)]
        grad_out = grad_out.detach().to("cpu", torch.float64)
    bias_leaf = None
    if dense is not None and dense.dtype != torch.bool:
        bias_leaf = (dense.detach().clone() if lowp else dense.detach().to("cpu", torch.float64)).requires_grad_(True)
        leaves.append(bias_leaf)
    elif dense is not None:
        dense = dense.detach().to(leaves[0].device)
    out, dead = _differentiable_attention(*leaves[:3], dense=dense if bias_leaf is None else bias_leaf,
                                          lowp=lowp, **kwargs)
    grads = torch.autograd.grad(out, leaves, grad_out, allow_unused=True)
    names = ["q", "k", "v"] + (["dense"] if bias_leaf is not None else [])
    return out.detach(), {n: (torch.zeros_like(t) if g is None else g) for n, g, t in zip(names, grads, leaves)}, dead


def attention_fp64_grads(q, k, v, grad_out, *, causal: str | None = None, slopes=None, dense=None, scale=None,
                         masked_below: float = MASKED_BELOW):
    """The oracle with gradients: (out, grads, dead) from torch.autograd on float64 CPU copies.

    Arguments as attention_fp64, plus ``grad_out`` (the upstream gradient, shaped like the output) and
    ``masked_below`` (additive values below it mask, see MASKED_BELOW). ``grads`` maps "q", "k", "v" and,
    for a float ``dense`` bias, "dense" (in ``dense``'s own shape: summed over the dimensions it broadcasts
    along) to float64 gradients. ``dead`` is bool (B, H, Sq, 1): the query rows with every key masked."""
    kwargs = {"causal": causal, "slopes": slopes, "scale": scale, "masked_below": masked_below}
    return _attention_with_grads(q, k, v, grad_out, dense, kwargs, lowp=False)


def attention_lowp_grads(q, k, v, grad_out, *, causal: str | None = None, slopes=None, dense=None, scale=None,
                         masked_below: float = MASKED_BELOW):
    """The same computation in the inputs' dtype on their device (scores and softmax in float32, products
    rounded to the input dtype): not a reference, a yardstick of how far plain low-precision arithmetic
    lands from the oracle, for tolerances of the form ``err <= 2 * err_lowp + atol``."""
    kwargs = {"causal": causal, "slopes": slopes, "scale": scale, "masked_below": masked_below}
    return _attention_with_grads(q, k, v, grad_out, dense, kwargs, lowp=True)
