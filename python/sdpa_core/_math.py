"""The fused kernels' contract in plain torch ops: the forward that also returns the log-sum-exp, and the
backward that reads it. Scores are materialized, (B, Hq, Sq, Skv) in float32 (float64 for float64 inputs).

The custom ops (``_ops.py``) run these where libsdpa refuses a call at run time: on CPU (where opcheck runs
the ops) and for a compiled call that the trace-time check (``_kernels.covers_training``) expected a kernel
for but the device turned out not to have. That keeps the ops total functions whose LSE is always real, so
the fused backward never reads an LSE that its forward did not write.
"""

from __future__ import annotations

import torch

from . import _fallback


def _with_query_heads(key: torch.Tensor, heads_q: int) -> torch.Tensor:
    """key or value with one head per query head (grouped-query attention, or one head broadcast)."""
    heads_kv = key.shape[1]
    return key if heads_kv == heads_q else key.repeat_interleave(heads_q // heads_kv, dim=1)


def _probabilities(query, key, bias, scale: float, lse: torch.Tensor | None):
    """softmax(scores) as exp(scores - lse), and the LSE: -inf for rows whose every key is masked, whose
    probabilities are 0. With ``lse`` given (the forward's), the probabilities are recomputed from it."""
    compute = torch.promote_types(query.dtype, torch.float32)
    s = _fallback.scores(query, _with_query_heads(key, query.shape[1]), bias, scale, compute)
    s = s.masked_fill(s < _fallback.MASKED_BELOW, float("-inf"))  # finfo.min masks, as in the kernels
    if lse is None:
        lse = torch.logsumexp(s, dim=-1)
    finite = lse.to(compute).masked_fill(torch.isneginf(lse), 0.0)  # dead rows: exp(-inf - 0) = 0
    return torch.exp(s - finite.unsqueeze(-1)), lse


def forward_lse(query, key, value, bias, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(output in the query's dtype, LSE as float32 (B, Hq, Sq)), as the fused forward writes them."""
    p, lse = _probabilities(query, key, bias, scale, None)
    out = p @ _with_query_heads(value, query.shape[1]).to(p.dtype)
    return out.to(query.dtype), lse.to(torch.float32)


def backward(grad_out, query, key, value, out, lse, bias, scale: float, grad_bias: torch.Tensor | None = None):
    """(dq, dk, dv) in the inputs' dtypes; dk and dv have key's heads (summed over each query-head group).

    dS = P * (dP - rowsum(dO * O)), with O the forward's rounded output, as the fused kernel computes it.
    ``grad_bias``, a (B, Hq, Sq, Skv) tensor, receives dS (the gradient of an additive dense bias), as the
    kernel's optional bias-gradient output does."""
    heads_q, heads_kv = query.shape[1], key.shape[1]
    p, _ = _probabilities(query, key, bias, scale, lse)
    compute = p.dtype
    d_out = grad_out.to(compute)
    k, v = (_with_query_heads(t, heads_q).to(compute) for t in (key, value))
    dv = p.transpose(-1, -2) @ d_out
    dp = d_out @ v.transpose(-1, -2)
    ds = p * (dp - (d_out * out.to(compute)).sum(dim=-1, keepdim=True))
    if grad_bias is not None:
        grad_bias.copy_(ds)
    dq = (ds @ k) * scale
    dk = (ds.transpose(-1, -2) @ query.to(compute)) * scale
    if heads_kv != heads_q:
        batch, group = query.shape[0], heads_q // heads_kv
        dk, dv = (g.reshape(batch, heads_kv, group, *g.shape[2:]).sum(dim=2) for g in (dk, dv))
    return dq.to(query.dtype), dk.to(key.dtype), dv.to(value.dtype)
