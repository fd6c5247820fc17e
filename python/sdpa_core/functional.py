"""The SDPA entry point: a drop-in for ``torch.nn.functional.scaled_dot_product_attention`` whose
``attn_mask`` may also be an ``AttnBias``.
"""

from __future__ import annotations

import warnings

import torch

from . import _dispatch, _validate
from ._dispatch import KernelBias
from .bias import AttnBias, TensorBias
from .variants import CausalVariant


_NO_MASK = KernelBias.causal_only(None)
_CAUSAL = KernelBias.causal_only(CausalVariant.UPPER_LEFT)


def scaled_dot_product_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                 attn_mask: torch.Tensor | AttnBias | None = None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: float | None = None,
                                 enable_gqa: bool = False) -> torch.Tensor:
    """softmax(query @ key^T * scale + bias) @ value, for (B, H, S, D) inputs with any strides.

    ``attn_mask``:
      * None: no mask (``is_causal=True`` adds an upper-left causal mask, as in PyTorch);
      * a Tensor: works as in PyTorch but warns (FutureWarning) — wrap it in ``TensorBias``;
      * an ``AttnBias`` that ``needs_materialization()``: materialized on the query's device, then computed;
      * any other ``AttnBias``: its ``dispatch`` runs. Built-in biases run fused CUDA kernels.

    ``is_causal=True`` with a TensorBias or a non-causal AlibiBias adds an upper-left causal mask; with a
    bias that is already causal (CausalBias, AlibiBias(causal=...)) it raises ValueError. A query row whose
    every key is masked outputs zeros. ``scale`` defaults to 1/sqrt(head_dim). With ``enable_gqa=True``,
    query head h reads key/value head h // (Hq // Hkv).
    """
    _validate.check_inputs(query, key, value, dropout_p, scale, enable_gqa)
    if attn_mask is None:
        return _dispatch.attention(query, key, value, _CAUSAL if is_causal else _NO_MASK, scale, dropout_p)
    attn_bias = as_attn_bias(attn_mask, is_causal)
    if attn_bias.needs_materialization():
        attn_bias = TensorBias(attn_bias.materialize(query.device))
    return attn_bias.dispatch(query, key, value, attn_bias, is_causal, scale, dropout_p)


def as_attn_bias(attn_mask, is_causal: bool) -> AttnBias:
    """``attn_mask`` as an AttnBias; a raw Tensor is wrapped in TensorBias with a deprecation warning."""
    if isinstance(attn_mask, AttnBias):
        return attn_mask
    if isinstance(attn_mask, torch.Tensor):
        warnings.warn("passing a Tensor as attn_mask is deprecated; wrap it in sdpa_core.TensorBias",
                      FutureWarning, stacklevel=3)
        if is_causal:
            raise ValueError("attn_mask (a Tensor) and is_causal=True cannot both be set, as in PyTorch; "
                             "use TensorBias(mask) with is_causal=True to combine them")
        return TensorBias(attn_mask)
    raise TypeError(f"attn_mask must be None, a torch.Tensor or an AttnBias; got {type(attn_mask).__name__}")
