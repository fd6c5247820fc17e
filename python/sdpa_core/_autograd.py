"""The fused forward and backward kernels as one eager autograd node.

The dispatcher builds this node only after libsdpa said it runs both passes for the call
(``_kernels.select_training``), so a refusal here is a broken promise, not a case to handle: it raises
instead of returning gradients from a different computation. ``torch.compile`` uses the custom ops of
``_ops.py`` instead (this class costs a few microseconds a call; an op call ~17).
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from . import _kernels


class FusedAttention(torch.autograd.Function):
    """out = attention(query, key, value) with ``bias`` (a KernelBias) and ``scale``; the backward is the
    fused kernel reading the saved output and log-sum-exp. query, key and value must already be aligned
    (``_kernels.aligned``): the backward passes them to the kernel again."""

    @staticmethod
    def forward(ctx, query, key, value, bias, scale: float):
        result = _kernels.try_forward_lse(query, key, value, bias, scale)
        if result is None:
            _, reason = _kernels.select(query, key, value, bias, scale)
            raise RuntimeError(f"sdpa_core: the fused forward refused a call libsdpa had selected it for: {reason}")
        out, lse = result
        ctx.save_for_backward(query, key, value, out, lse)
        ctx.bias, ctx.scale = bias, scale
        ctx.deterministic = torch.are_deterministic_algorithms_enabled()  # what the dispatcher planned with
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        query, key, value, out, lse = ctx.saved_tensors
        deterministic = torch.are_deterministic_algorithms_enabled()
        grads = _kernels.try_backward(query, key, value, out, lse, grad_out, ctx.bias, ctx.scale, deterministic)
        if grads is None:
            _, reason = _kernels.select_backward(query, key, value, ctx.bias, ctx.scale, deterministic)
            changed = (" (torch.use_deterministic_algorithms changed since the forward, which was planned "
                       "for the other setting)" if deterministic != ctx.deterministic else "")
            raise RuntimeError(f"sdpa_core: the fused backward kernel refused a call whose forward it had accepted"
                               f"{changed}: {reason}; no gradient was computed")
        dq, dk, dv = grads
        return dq, dk, dv, None, None
