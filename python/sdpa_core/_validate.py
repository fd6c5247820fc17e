"""Checks of the SDPA arguments themselves; each error names the argument and what it must be.

The hot path pays for one combined test per group; only a failing call runs the detailed checks that
build the message. Errors are SdpaValueError / SdpaTypeError, which are also RuntimeError as torch's are.
"""

from __future__ import annotations

import math

import torch

from .errors import SdpaTypeError, SdpaValueError

_NUMBER = (int, float)


def check_scalars(dropout_p, is_causal, scale, enable_gqa) -> None:
    if (type(dropout_p) in _NUMBER and 0.0 <= dropout_p < 1.0 and type(is_causal) is bool
            and type(enable_gqa) is bool and (scale is None or (type(scale) in _NUMBER and math.isfinite(scale)))):
        return
    if not isinstance(dropout_p, _NUMBER) or isinstance(dropout_p, bool) or not 0.0 <= dropout_p < 1.0:
        raise SdpaValueError(f"dropout_p must be a float in [0, 1); got {dropout_p!r}")
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, (*_NUMBER, torch.SymFloat, torch.SymInt)):
            if not (isinstance(scale, torch.Tensor) and scale.numel() == 1):
                raise SdpaTypeError(f"scale must be a float or None; got {type(scale).__name__}")
        if isinstance(scale, _NUMBER) and not math.isfinite(scale):
            raise SdpaValueError(f"scale must be finite; got {scale!r}")
    for name, flag in (("is_causal", is_causal), ("enable_gqa", enable_gqa)):
        if not isinstance(flag, (bool, int)):
            raise SdpaTypeError(f"{name} must be a bool; got {type(flag).__name__}")


def tensors_look_valid(query, key, value) -> bool:
    """One test for the common case: three floating tensors of one dtype on one device."""
    try:
        return (query.is_floating_point() and query.dtype == key.dtype == value.dtype
                and query.device == key.device == value.device)
    except AttributeError:
        return False


def check_tensor_types(query, key, value) -> None:
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, torch.Tensor):
            raise SdpaTypeError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
    if not query.is_floating_point():
        raise SdpaTypeError(f"query must be a floating point tensor; got dtype {query.dtype}")
    for name, t in (("key", key), ("value", value)):
        if t.dtype != query.dtype:
            raise SdpaTypeError(f"{name}.dtype ({t.dtype}) must equal query.dtype ({query.dtype})")
        if t.device != query.device:
            raise SdpaValueError(f"{name} is on {t.device} but query is on {query.device}")


def check_inputs(query, key, value, enable_gqa: bool) -> None:
    """Raises on 4-D (B, H, S, D) inputs that do not fit together. One key/value head serves every query
    head even without enable_gqa: torch broadcasts it so."""
    q, k, v = query.shape, key.shape, value.shape
    if (k[1] == v[1] and k[2] == v[2] and q[3] == k[3]
            and (q[1] == k[1] or k[1] == 1 or (enable_gqa and k[1] > 0 and q[1] % k[1] == 0))):
        return
    if key.shape[1] != value.shape[1] or key.shape[2] != value.shape[2]:
        raise SdpaValueError(f"key and value must have the same heads and seq_len; got key {tuple(key.shape)}, "
                             f"value {tuple(value.shape)}")
    if key.shape[3] != query.shape[3]:
        raise SdpaValueError(f"key head_dim ({key.shape[3]}) must equal query head_dim ({query.shape[3]})")
    _check_heads(query.shape[1], key.shape[1], enable_gqa)


def _check_heads(heads_q: int, heads_kv: int, enable_gqa: bool) -> None:
    if not enable_gqa:
        raise SdpaValueError(f"query has {heads_q} heads but key/value have {heads_kv}; pass enable_gqa=True for "
                             f"grouped-query attention")
    raise SdpaValueError(f"with enable_gqa=True, query heads ({heads_q}) must be a multiple of key/value heads "
                         f"({heads_kv})")
