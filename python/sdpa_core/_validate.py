"""Checks of the SDPA arguments themselves; each error names the argument and what it must be."""

from __future__ import annotations

import torch


def _check_tensor(name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
    if t.dim() != 4:
        raise ValueError(f"{name} must have shape (batch, heads, seq_len, head_dim); got shape {tuple(t.shape)}")


def check_inputs(query, key, value, dropout_p: float, scale, enable_gqa: bool) -> None:
    """Raises on invalid arguments. Valid calls (the hot path) cost one combined test; only a failing call
    pays for the detailed checks that name the argument."""
    if not _looks_valid(query, key, value, dropout_p, scale, enable_gqa):
        _check_in_detail(query, key, value, dropout_p, scale, enable_gqa)


def _looks_valid(query, key, value, dropout_p, scale, enable_gqa) -> bool:
    try:
        q, k, v = query.shape, key.shape, value.shape
        return (len(q) == 4 and len(k) == 4 and len(v) == 4 and query.dtype == key.dtype == value.dtype
                and query.is_floating_point() and query.device == key.device == value.device
                and q[0] == k[0] == v[0] and k[1] == v[1] and k[2] == v[2] and q[3] == k[3]
                and (q[1] == k[1] or (enable_gqa and k[1] > 0 and q[1] % k[1] == 0))
                and type(dropout_p) in (int, float) and 0.0 <= dropout_p < 1.0
                and (scale is None or type(scale) in (int, float)))
    except (AttributeError, TypeError):
        return False


def _check_in_detail(query, key, value, dropout_p: float, scale, enable_gqa: bool) -> None:
    for name, t in (("query", query), ("key", key), ("value", value)):
        _check_tensor(name, t)
    if not query.is_floating_point():
        raise TypeError(f"query must be a floating point tensor; got dtype {query.dtype}")
    for name, t in (("key", key), ("value", value)):
        if t.dtype != query.dtype:
            raise TypeError(f"{name}.dtype ({t.dtype}) must equal query.dtype ({query.dtype})")
        if t.device != query.device:
            raise ValueError(f"{name} is on {t.device} but query is on {query.device}")
        if t.shape[0] != query.shape[0]:
            raise ValueError(f"{name} has batch {t.shape[0]} but query has batch {query.shape[0]} "
                             f"(shapes: query {tuple(query.shape)}, {name} {tuple(t.shape)})")
    if key.shape[1] != value.shape[1] or key.shape[2] != value.shape[2]:
        raise ValueError(f"key and value must have the same heads and seq_len; got key {tuple(key.shape)}, "
                         f"value {tuple(value.shape)}")
    if key.shape[3] != query.shape[3]:
        raise ValueError(f"key head_dim ({key.shape[3]}) must equal query head_dim ({query.shape[3]})")
    _check_heads(query.shape[1], key.shape[1], enable_gqa)
    if not isinstance(dropout_p, (int, float)) or not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be a float in [0, 1); got {dropout_p!r}")
    if scale is not None and not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be a float or None; got {type(scale).__name__}")


def _check_heads(heads_q: int, heads_kv: int, enable_gqa: bool) -> None:
    if heads_q == heads_kv:
        return
    if not enable_gqa:
        raise ValueError(f"query has {heads_q} heads but key/value have {heads_kv}; pass enable_gqa=True for "
                         f"grouped-query attention")
    if heads_kv == 0 or heads_q % heads_kv != 0:
        raise ValueError(f"with enable_gqa=True, query heads ({heads_q}) must be a multiple of key/value heads "
                         f"({heads_kv})")
