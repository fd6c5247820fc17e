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
from ._kernel_bias import KernelBias


class FusedAttention(torch.autograd.Function):
    """out = attention(query, key, value) with ``bias`` (a KernelBias) and ``scale``; the backward is the
    fused kernel reading the saved output and log-sum-exp. query, key and value must already be aligned
    (``_kernels.aligned``): the backward passes them to the kernel again.

    ``dense`` is ``bias.dense`` (or None), passed as an input of its own so that autograd sees it: a float
    bias that requires grad (a learned relative-position bias) gets its gradient from the same kernel call.
    The kernel writes it for every (b, query head, i, j); it is summed here to ``dense``'s shape, and autograd
    carries it on to the user's tensor through whatever views (reshape, expand) made ``dense`` from it."""

    @staticmethod
    def forward(ctx, query, key, value, dense, bias, scale: float):
        result = _kernels.try_forward_lse(query, key, value, bias, scale)
        if result is None:
            _, reason = _kernels.select(query, key, value, bias, scale)
            raise RuntimeError(f"sdpa_core: the fused forward refused a call libsdpa had selected it for: {reason}")
        out, lse = result
        # dense is saved (not only held by ctx.bias) so that modifying it in place before the backward, which
        # recomputes the probabilities from it, raises instead of giving gradients of other values
        ctx.save_for_backward(query, key, value, out, lse, dense)
        ctx.bias, ctx.scale = bias, scale
        ctx.deterministic = torch.are_deterministic_algorithms_enabled()  # what the dispatcher planned with
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        query, key, value, out, lse, dense = ctx.saved_tensors
        bias = ctx.bias
        if dense is not None:  # the unpacked tensor: saved-tensor hooks (offloading) may have moved it
            bias = KernelBias(bias.kind, bias.causal, slopes=bias.slopes, dense=dense)
        # only where autograd asks for it: the full (B, Hq, Sq, Skv) buffer is the costly part of this feature
        grad_bias = _kernels.empty_bias_grad(query, key) if ctx.needs_input_grad[3] else None
        deterministic = torch.are_deterministic_algorithms_enabled()
        grads = _kernels.try_backward(query, key, value, out, lse, grad_out, bias, ctx.scale, deterministic,
                                      grad_bias=grad_bias)
        if grads is None:
            _, reason = _kernels.select_backward(query, key, value, bias, ctx.scale, deterministic,
                                                 bias_grad=grad_bias is not None)
            changed = (" (torch.use_deterministic_algorithms changed since the forward, which was planned "
                       "for the other setting)" if deterministic != ctx.deterministic else "")
            raise RuntimeError(f"sdpa_core: the fused backward kernel refused a call whose forward it had accepted"
                               f"{changed}: {reason}; no gradient was computed")
        dq, dk, dv = grads
        d_dense = None
        if grad_bias is not None:
            # the bias broadcast along some dims (missing leading ones included): its gradient is the sum over
            # them. torch's reductions accumulate half-precision inputs in float32 and round once.
            d_dense = grad_bias.sum_to_size(dense.shape).to(dense.dtype)
        return dq, dk, dv, d_dense, None, None
