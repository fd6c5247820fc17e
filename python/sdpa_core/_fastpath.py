"""The eager inference hot path: a call shaped like one already checked and routed to a fused kernel goes to
libsdpa without the checks and routing again.

The checked path (``functional._checked``) validates the arguments, flattens ranks, routes (``_dispatch``,
``_routing``) and builds libsdpa's fields; on a small call (a decode step) that Python costs more than the
kernel, and more than torch's whole SDPA call. So each call that could take this path is first looked up
by its signature: everything the checks and the routing read, except what a decode loop changes every step
(the key/value length and strides, the data pointers, the stream). A signature the checked path has run
once and sent to a fused kernel (``learn``) maps to a ``_Route``; a hit re-checks only the per-call parts
(lengths agree, pointers and strides 16-byte aligned, no empty key range) and launches. libsdpa still
validates and selects the kernel on every launch, so a key length no kernel covers is refused there and
the call takes the checked path after all. A miss, a training call, ``torch.compile`` tracing, tensor
subclasses, other masks: the checked path, as before.

Covered: ``attn_mask`` None (with or without ``is_causal``), ``CausalBias`` and ``AlibiBias``; 4-D CUDA
inputs; no dropout; no gradient needed. The signature includes the dispatch policy, so changing it
re-routes.
"""

from __future__ import annotations

import torch

from . import _dispatch, _kernels, policy
from ._kernel_bias import unmasked
from .bias import AlibiBias, CausalBias

_MAX_ROUTES = 4096  # distinct signatures kept; beyond that the table starts over


class _Route:
    """What a signature's fused call needs besides the per-call values: the dtype code, the bias fields
    (without the slopes pointer, which the call supplies) and the scale."""

    __slots__ = ("dtype_code", "bias_fields", "scale")

    def __init__(self, dtype_code: int, bias_fields: list[int], scale: float):
        self.dtype_code, self.bias_fields, self.scale = dtype_code, bias_fields, scale


# signature -> _Route, or None for a signature the checked path keeps (torch's kernel, a copy, a refusal)
_routes: dict[tuple, _Route | None] = {}


def signature(query, key, value, attn_mask, is_causal, scale, enable_gqa, dropout_p) -> tuple | None:
    """The call's signature, or None when it cannot take this path at all (then it is never learned)."""
    if type(query) is not torch.Tensor or type(key) is not torch.Tensor or type(value) is not torch.Tensor:
        return None
    if type(dropout_p) not in (float, int) or dropout_p or not (scale is None or type(scale) is float):
        return None
    if type(is_causal) is not bool or type(enable_gqa) is not bool or torch.compiler.is_compiling():
        return None
    slopes_grad = False
    if attn_mask is None:
        mask = None
    elif type(attn_mask) is CausalBias:
        mask = attn_mask.variant
    elif type(attn_mask) is AlibiBias:
        slopes = attn_mask.slopes
        if type(slopes) is not torch.Tensor:
            return None
        slopes_grad = slopes.requires_grad
        mask = (attn_mask.causal, slopes.shape, slopes.stride(), slopes.device, slopes.dtype)
    else:
        return None
    if torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad or slopes_grad):
        return None  # training: the checked path decides forward and backward together
    k_shape, v_shape = key.shape, value.shape
    return (query.shape, query.stride(), query.dtype, query.device, k_shape[:2], k_shape[3:], key.dtype,
            key.device, v_shape[:2], v_shape[3:], value.dtype, value.device, type(attn_mask), mask, is_causal,
            scale, enable_gqa, policy.current())


def attention(sig: tuple, query, key, value, attn_mask) -> torch.Tensor | None:
    """The output when ``sig`` is a learned fused signature and this call's own parts fit, else None."""
    route = _routes.get(sig)
    if route is None:
        return None
    seq_q, seq_kv = query.shape[2], key.shape[2]
    if seq_kv == 0 or value.shape[2] != seq_kv:
        return None
    if attn_mask is not None and (attn_mask.seq_len_q != seq_q or attn_mask.seq_len_kv != seq_kv):
        return None
    k_stride, v_stride = key.stride(), value.stride()
    q_ptr, k_ptr, v_ptr = query.data_ptr(), key.data_ptr(), value.data_ptr()
    if (q_ptr | k_ptr | v_ptr) % 16 or k_stride[3] != 1 or v_stride[3] != 1:
        return None
    if not (_kernels.rows_aligned(key.shape, k_stride) and _kernels.rows_aligned(value.shape, v_stride)):
        return None
    out = torch.empty_like(query)
    q_stride, o_stride = query.stride(), out.stride()
    batch, heads_q, _, head_dim = query.shape
    device = query.device
    views = [(q_ptr, *q_stride[:3]), (k_ptr, *k_stride[:3]), (v_ptr, *v_stride[:3]), (out.data_ptr(), *o_stride[:3])]
    problem = _kernels.problem_fields(route.dtype_code, (batch, heads_q, key.shape[1], seq_q, seq_kv, head_dim),
                                      views, 0, _kernels.current_stream(device))
    fields = route.bias_fields
    if type(attn_mask) is AlibiBias:
        fields = fields.copy()
        fields[2] = attn_mask.slopes.data_ptr()
    return out if _kernels.launch(problem, fields, route.scale, device) else None


def knows(sig: tuple) -> bool:
    """The signature has been learned (as a route or as the checked path's)."""
    return sig in _routes


def learn(sig: tuple, query, key, value, attn_mask, is_causal, scale) -> None:
    """Records where the checked path sends calls of this signature, after it has run one (so the
    arguments were valid). Only a fused inference call without copies becomes a route."""
    if len(_routes) >= _MAX_ROUTES:
        _routes.clear()
    _routes[sig] = _route_for(query, key, value, attn_mask, is_causal, scale)


def _route_for(query, key, value, attn_mask, is_causal, scale) -> _Route | None:
    if query.dim() != 4 or key.dim() != 4 or value.dim() != 4 or not query.is_cuda:
        return None
    if not _kernels.is_aligned(query) or query.stride(-1) != 1:
        return None
    bias = unmasked(is_causal) if attn_mask is None else attn_mask._kernel_bias(is_causal)
    plan = _dispatch.plan(query, key, value, bias, scale, 0.0)
    if not plan.path.startswith("fused:") or plan.reasons or plan.backward:
        return None
    return _Route(_kernels.dtype_code(query.dtype), _kernels.bias_args(bias, query, key),
                  _dispatch.default_scale(query, scale))
