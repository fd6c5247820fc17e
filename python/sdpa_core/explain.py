"""``explain()``: which path ``scaled_dot_product_attention`` would take for these arguments, and why."""

from __future__ import annotations

import warnings

import torch

from . import _dispatch, _validate
from ._dispatch import KernelBias
from .bias import AttnBias, TensorBias, _BuiltinBias
from .functional import as_attn_bias
from .variants import CausalVariant


def explain(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask=None, dropout_p: float = 0.0,
            is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False) -> str:
    """One paragraph: the fused kernel and its configuration, or the PyTorch fallback with every reason.

    Takes exactly the arguments of ``scaled_dot_product_attention``, raises the same errors, runs nothing.
    """
    _validate.check_inputs(query, key, value, dropout_p, scale, enable_gqa)
    notes = []
    if attn_mask is None:
        described = "no bias" + (" (is_causal: CausalUpperLeft)" if is_causal else "")
        bias = KernelBias.causal_only(CausalVariant.UPPER_LEFT if is_causal else None)
        return _render(described, notes, *_dispatch.plan(query, key, value, bias, scale, dropout_p))
    if isinstance(attn_mask, torch.Tensor):
        notes.append("attn_mask is a Tensor: deprecated, wrap it in TensorBias")
    attn_bias = _quiet_as_attn_bias(attn_mask, is_causal)
    if attn_bias.needs_materialization():
        notes.append(f"{type(attn_bias).__name__} needs materialization: it is built as a dense tensor first")
        attn_bias = TensorBias(attn_bias.materialize(query.device))
    if not isinstance(attn_bias, _BuiltinBias):
        return f"{attn_bias!r}: runs its own {type(attn_bias).__name__}.dispatch (user-defined)"
    attn_bias._check_inputs(query, key)
    bias = attn_bias._kernel_bias(is_causal)
    return _render(repr(attn_bias), notes, *_dispatch.plan(query, key, value, bias, scale, dropout_p))


def _quiet_as_attn_bias(attn_mask, is_causal: bool) -> AttnBias:
    """as_attn_bias without the deprecation warning: explain() reports it as a note instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return as_attn_bias(attn_mask, is_causal)


def _render(described: str, notes: list[str], kernel: str | None, reasons: list[str]) -> str:
    lines = [f"bias: {described}"] + [f"note: {n}" for n in notes]
    if kernel:
        lines.append(f"path: fused kernel {kernel}")
    else:
        lines.append("path: PyTorch fallback (bias materialized, computed by torch), because:")
        lines += [f"  - {r}" for r in reasons]
    return "\n".join(lines)
