"""Every bias the API offers, each paired with the oracle arguments that describe it independently."""

from __future__ import annotations

import torch

import sdpa_core
from sdpa_core import CausalVariant


def _slopes(batch, heads, device, per_batch=False):
    shape = (batch, heads) if per_batch else (heads,)
    return (torch.rand(*shape, device=device) * 0.5 + 0.05).float()


def _keep_mask(batch, heads, seq_q, seq_kv, device):
    keep = torch.rand(batch, 1, seq_q, seq_kv, device=device) > 0.3
    keep[:, :, seq_q // 2, :] = False  # a row where every key is masked: output must be 0, not NaN
    return keep


# name -> builder(batch, heads, seq_q, seq_kv, device, dtype) -> (attn_mask, is_causal, oracle kwargs)
BIASES = {
    "none": lambda b, h, sq, skv, dev, dt: (None, False, {}),
    "is_causal": lambda b, h, sq, skv, dev, dt: (None, True, {"causal": "upper_left"}),
    "causal_upper_left": lambda b, h, sq, skv, dev, dt: (
        sdpa_core.causal_upper_left(sq, skv), False, {"causal": "upper_left"}),
    "causal_lower_right": lambda b, h, sq, skv, dev, dt: (
        sdpa_core.causal_lower_right(sq, skv), False, {"causal": "lower_right"}),
}


def _alibi(causal_variant, is_causal, oracle_causal, per_batch=False):
    def build(b, h, sq, skv, dev, dt):
        slopes = _slopes(b, h, dev, per_batch)
        bias = sdpa_core.AlibiBias(slopes, sq, skv, causal=causal_variant)
        return bias, is_causal, {"slopes": slopes, "causal": oracle_causal}
    return build


def _dense(kind, is_causal):
    def build(b, h, sq, skv, dev, dt):
        if kind == "float":
            dense = torch.randn(1, h, sq, skv, device=dev).to(dt)
        elif kind == "float_broadcast":  # (B, 1, 1, Skv): a padding-style bias read through zero strides
            dense = torch.randn(b, 1, 1, skv, device=dev).to(dt)
        else:
            dense = _keep_mask(b, h, sq, skv, dev)
        return sdpa_core.TensorBias(dense), is_causal, {"dense": dense, "causal": "upper_left" if is_causal else None}
    return build


BIASES.update({
    "alibi": _alibi(None, False, None),
    "alibi_per_batch": _alibi(None, False, None, per_batch=True),
    "alibi_upper_left": _alibi(CausalVariant.UPPER_LEFT, False, "upper_left"),
    "alibi_lower_right": _alibi(CausalVariant.LOWER_RIGHT, False, "lower_right"),
    "alibi_is_causal": _alibi(None, True, "upper_left"),
    "dense_float": _dense("float", False),
    "dense_float_broadcast": _dense("float_broadcast", False),
    "dense_bool": _dense("bool", False),
    "dense_float_is_causal": _dense("float", True),
    "dense_bool_is_causal": _dense("bool", True),
})

SIZES = [(1, 1), (1, 17), (17, 1), (17, 113), (113, 17), (113, 113), (1000, 113), (113, 1000)]
