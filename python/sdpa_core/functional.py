"""The SDPA entry point: a drop-in for ``torch.nn.functional.scaled_dot_product_attention`` whose
``attn_mask`` may also be an ``AttnBias``.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch.nn.attention import bias as _torch_bias

from . import _dispatch, _fallback, _fastpath, _nd, _routing, _validate
from ._kernel_bias import unmasked
from .bias import AttnBias, CausalBias, TensorBias
from .errors import SdpaTypeError, SdpaValueError
from .variants import CausalVariant, as_causal_variant


def scaled_dot_product_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                 attn_mask: torch.Tensor | AttnBias | None = None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: float | None = None,
                                 enable_gqa: bool = False) -> torch.Tensor:
    r"""``softmax(query @ key^T * scale + bias) @ value``, a drop-in for
    ``torch.nn.functional.scaled_dot_product_attention``.

    Args:
        query: (N, ..., Hq, L, E). 3-D inputs have no batch dimension, 5-D and up several, as in torch.
        key: (N, ..., Hkv, S, E).
        value: (N, ..., Hkv, S, Ev).
        attn_mask: None; an ``AttnBias`` (``CausalBias``, ``AlibiBias``, ``TensorBias`` or your own);
            torch's ``torch.nn.attention.bias.CausalBias`` (taken as ours); or a Tensor, which works as in
            torch but emits a ``FutureWarning`` (wrap it in ``TensorBias``): a bool mask (True = attend)
            or an additive float bias broadcastable to (N, ..., Hq, L, S). An additive value below
            -2.35e38 (e.g. ``torch.finfo(torch.bfloat16).min``) counts as masked, like -inf.
        dropout_p: dropout probability on the attention weights (computed by PyTorch).
        is_causal: add an upper-left causal mask (key j kept for query i when j <= i). Combines with a
            ``TensorBias`` or a non-causal ``AlibiBias``.
        scale: the factor on ``query @ key^T``; default ``1 / sqrt(E)``. Must be finite.
        enable_gqa: grouped-query attention: query head h reads key/value head h // (Hq // Hkv).

    Returns:
        (N, ..., Hq, L, Ev), the query's dtype. A query row whose every key is masked is 0 (torch gives 0
        for -inf masks too; for values like ``finfo.min`` it would average the values).

    Raises:
        SdpaValueError / SdpaTypeError (both also RuntimeError, as torch raises): an argument of the wrong
            shape, dtype or value; the message names it. ``is_causal=True`` together with a bias that is
            already causal is an SdpaValueError; with a Tensor mask or TensorBias both apply, as in torch.

    Where no sdpa_core kernel covers the call (CPU, float32/float64, dropout, ALiBi slopes that require
    grad, other head dims), PyTorch computes it from the cheapest equivalent request; ``explain()`` tells
    which path runs and why. Inputs that require grad run sdpa_core's fused backward where it has one
    for the call (a training call runs forward and backward on the same path); so does a float
    ``TensorBias`` that requires grad, whose gradient the fused backward writes (eager mode; under
    ``torch.compile`` such a call runs on PyTorch).
    """
    if attn_mask is None and _routing.torch_takes_unmasked(query, key, value, is_causal, dropout_p, scale):
        try:
            return F.scaled_dot_product_attention(query, key, value, dropout_p=dropout_p, is_causal=is_causal,
                                                  scale=scale, enable_gqa=enable_gqa)
        except RuntimeError:
            _raise_named(query, key, value, dropout_p, is_causal, scale, enable_gqa)  # ours, if it knows better
            raise
    sig = _fastpath.signature(query, key, value, attn_mask, is_causal, scale, enable_gqa, dropout_p)
    if sig is not None:
        out = _fastpath.attention(sig, query, key, value, attn_mask)
        if out is not None:
            return out
    _validate.check_scalars(dropout_p, is_causal, scale, enable_gqa)
    # resolved here, not in _checked: its deprecation warning points at the caller's line (stacklevel)
    attn_bias = resolve_mask(attn_mask, is_causal, query.device if isinstance(query, torch.Tensor) else None)
    out = _checked(query, key, value, attn_bias, dropout_p, is_causal, scale, enable_gqa)
    if sig is not None and not _fastpath.knows(sig):
        _fastpath.learn(sig, query, key, value, attn_mask, is_causal, scale)
    return out


def _checked(query, key, value, attn_bias, dropout_p, is_causal, scale, enable_gqa) -> torch.Tensor:
    """The entry point after the hot paths and the mask's resolution: input checks, ranks, routing, then a
    fused kernel or torch."""
    if not _validate.tensors_look_valid(query, key, value) or not _nd.is_canonical(query, key, value):
        _validate.check_tensor_types(query, key, value)
        return _torch_as_is(query, key, value, attn_bias, dropout_p, is_causal, scale, enable_gqa)
    adapted = _nd.to_4d(query, key, value, attn_bias)
    if adapted is None:
        return _torch_as_is(query, key, value, attn_bias, dropout_p, is_causal, scale, enable_gqa)
    q, k, v, attn_bias, restore = adapted
    _validate.check_inputs(q, k, v, enable_gqa)
    if attn_bias is None:
        return restore(_dispatch.attention(q, k, v, unmasked(is_causal), scale, dropout_p, q.shape[1] != k.shape[1]))
    return restore(attn_bias.dispatch(q, k, v, attn_bias, is_causal, scale, dropout_p))


def _raise_named(query, key, value, dropout_p, is_causal, scale, enable_gqa) -> None:
    """Runs the checks the no-mask hot path skipped; raises the error that names the bad argument."""
    _validate.check_scalars(dropout_p, is_causal, scale, enable_gqa)
    _validate.check_tensor_types(query, key, value)
    if _nd.is_canonical(query, key, value):
        q, k, v, _, _ = _nd.to_4d(query, key, value, None)
        _validate.check_inputs(q, k, v, enable_gqa)
    else:
        _check_broadcast(query, key, value)


def resolve_mask(attn_mask, is_causal: bool, device) -> AttnBias | None:
    """``attn_mask`` as an AttnBias (materialized first when it needs it), or None for no mask.

    A raw Tensor is wrapped in TensorBias with a deprecation warning; torch's CausalBias becomes ours.
    Shared by the entry point and ``explain()``."""
    if attn_mask is None:
        return None
    if isinstance(attn_mask, _torch_bias.CausalBias):  # a Tensor subclass: test it before Tensor
        return CausalBias(as_causal_variant(attn_mask.variant), attn_mask.seq_len_q, attn_mask.seq_len_kv)
    if isinstance(attn_mask, AttnBias):
        if attn_mask.needs_materialization():
            return TensorBias(attn_mask.materialize(device))
        return attn_mask
    if isinstance(attn_mask, torch.Tensor):
        _warn_tensor_mask()
        if attn_mask.dtype != torch.bool and not attn_mask.is_floating_point():
            raise SdpaTypeError(f"attn_mask must be a bool or floating point tensor, as in PyTorch; got dtype "
                                f"{attn_mask.dtype}")
        return TensorBias(attn_mask)  # with is_causal, torch (2.13) applies both; so does TensorBias
    raise SdpaTypeError(f"attn_mask must be None, a torch.Tensor or an AttnBias; got {type(attn_mask).__name__}")


def _warn_tensor_mask() -> None:
    # torch.compile cannot trace warnings.warn; the eager call of the same code has warned already.
    if not torch.compiler.is_compiling():
        warnings.warn("passing a Tensor as attn_mask is deprecated; wrap it in sdpa_core.TensorBias",
                      FutureWarning, stacklevel=4)


def _check_broadcast(query, key, value) -> None:
    if query.dim() < 2:
        raise SdpaValueError(f"query must have at least 2 dimensions (..., L, E); got shape {tuple(query.shape)}")
    try:
        torch.broadcast_shapes(query.shape[:-3], key.shape[:-3], value.shape[:-3])
    except RuntimeError:
        raise SdpaValueError(f"the batch dimensions of query {tuple(query.shape)}, key {tuple(key.shape)} and "
                             f"value {tuple(value.shape)} do not broadcast") from None


def _torch_as_is(query, key, value, attn_bias, dropout_p, is_causal, scale, enable_gqa) -> torch.Tensor:
    """Shapes only torch's broadcasting covers (2-D inputs, batch dimensions that broadcast): the bias
    materialized, torch computes."""
    _check_broadcast(query, key, value)
    mask = None
    if attn_bias is not None:
        mask = attn_bias.materialize(query.device)
        if mask.dtype != torch.bool and mask.dtype != query.dtype:
            mask = mask.to(query.dtype)
        if is_causal:
            if isinstance(attn_bias, CausalBias):
                raise SdpaValueError(f"is_causal=True cannot be combined with {attn_bias!r}")
            mask = _fallback.with_causal(mask, CausalVariant.UPPER_LEFT, query.shape[-2], key.shape[-2])
            is_causal = False
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout_p,
                                          is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)
