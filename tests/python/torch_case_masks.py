"""The masks of the side-by-side sweep (``torch_cases``): each ``Mask`` is built twice, once as what torch
gets (a tensor or torch's own bias object) and once as what sdpa_core gets (the same tensor, or one of
sdpa_core's bias objects), from the formulas here, never from sdpa_core's own builders."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import torch
from torch.nn.attention import bias as torch_bias

import sdpa_core

# --------------------------------------------------------------------------------------------- masks

@dataclasses.dataclass(frozen=True)
class Mask:
    """How the mask of a case is built. ``kind`` is one of:

    * ``tensor``: a plain Tensor passed to both (sdpa_core warns FutureWarning);
    * ``torch_causal``: torch's ``causal_upper_left/lower_right`` object, passed to both;
    * ``torch_variant``: ``sdpa_core.CausalBias(torch's CausalVariant, ...)`` vs torch's CausalBias;
    * ``tensor_bias``: ``sdpa_core.TensorBias(t)`` vs torch with ``t`` (and is_causal) materialized;
    * ``causal_bias``: ``sdpa_core.CausalBias`` vs torch with the bool mask;
    * ``alibi``: ``sdpa_core.AlibiBias`` vs torch with the additive float mask.

    ``values`` (tensor kinds): bool, bool_dead (rows all False), float_q (query dtype), float32,
    float_neginf (scattered -inf and -inf rows), float_min (rows of finfo(dtype).min). ``shape`` is a
    tuple of symbols resolved against the inputs: "Sq", "Skv", integers, or "L-k" for the query's k-th
    leading dim from the end (L-1 = heads). ``variant``: "upper_left"/"lower_right"; for alibi "" = none.
    """

    kind: str
    values: str = ""
    shape: tuple = ()
    float_dtype: torch.dtype | None = None  # dtype of float masks; None = per ``values``
    variant: str = ""
    per_batch: bool = False  # alibi slopes (B, H)
    torch_enum: bool = False  # alibi: causal given as torch's CausalVariant

    def describe(self) -> str:
        if self.kind == "tensor" or self.kind == "tensor_bias":
            name = "Tensor" if self.kind == "tensor" else "TensorBias"
            return f"{name}[{self.values}{'' if self.float_dtype is None else ':' + _short(self.float_dtype)}]" \
                   f"{_shape_text(self.shape)}"
        if self.kind == "alibi":
            causal = (("torch.CausalVariant." if self.torch_enum else "") + self.variant) if self.variant else None
            return f"AlibiBias(slopes={'(B,H)' if self.per_batch else '(H,)'}, causal={causal})"
        names = {"torch_causal": "torch.causal_", "torch_variant": "sdpa_core.CausalBias(torch.CausalVariant.",
                 "causal_bias": "sdpa_core.causal_"}
        return names[self.kind] + self.variant + (")" if self.kind == "torch_variant" else "")


def _short(dtype) -> str:
    return str(dtype).replace("torch.", "").replace("float", "f")


def _shape_text(shape) -> str:
    return "(" + ",".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _resolve(shape, leading, seq_q, seq_kv) -> tuple[int, ...]:
    out = []
    for s in shape:
        if s == "Sq":
            out.append(seq_q)
        elif s == "Skv":
            out.append(seq_kv)
        elif isinstance(s, str) and s.startswith("L-"):
            out.append(leading[-int(s[2:])])
        else:
            out.append(int(s))
    return tuple(out)


def _mask_values(values: str, shape, query_dtype, float_dtype) -> torch.Tensor:
    """A random mask of ``shape``; rows (last-but-one index) 0 and the middle one are special where the
    kind asks for fully masked rows."""
    if values in ("bool", "bool_dead"):
        keep = torch.rand(shape) > 0.3
        if values == "bool_dead" and len(shape) >= 2 and shape[-2] > 0:
            keep[..., shape[-2] // 2, :] = False
        return keep
    dtype = float_dtype or (query_dtype if values != "float32" else torch.float32)
    m = torch.randn(shape, dtype=torch.float32)
    if values == "float_neginf":
        m = m.masked_fill(torch.rand(shape) < 0.3, float("-inf"))
        if len(shape) >= 2 and shape[-2] > 0:
            m[..., shape[-2] // 2, :] = float("-inf")
    m = m.to(dtype)
    if values == "float_min" and len(shape) >= 2 and shape[-2] > 0:
        m[..., shape[-2] // 2, :] = torch.finfo(dtype).min
    return m


def _keep_causal(variant: str, seq_q: int, seq_kv: int) -> torch.Tensor:
    offset = seq_kv - seq_q if variant == "lower_right" else 0
    i = torch.arange(seq_q).view(-1, 1)
    j = torch.arange(seq_kv).view(1, -1)
    return j <= i + offset


def _alibi_additive(slopes: torch.Tensor, seq_q: int, seq_kv: int, dtype) -> torch.Tensor:
    """-slope * |i + Skv - Sq - j| computed in float64, then cast to ``dtype``: (H, Sq, Skv) or
    (B, H, Sq, Skv)."""
    i = torch.arange(seq_q, dtype=torch.float64).view(-1, 1)
    j = torch.arange(seq_kv, dtype=torch.float64).view(1, -1)
    distance = (i + (seq_kv - seq_q) - j).abs()
    return (-slopes.to(torch.float64)[..., None, None] * distance).to(dtype)


def _with_causal(mask: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return mask & keep
    return mask.masked_fill(~keep, float("-inf"))


@dataclasses.dataclass
class Built:
    """One case's arguments, ready to call: what torch gets and what sdpa_core gets."""

    torch_mask: Any
    torch_is_causal: bool
    ours_mask: Any
    ours_is_causal: bool
    ours_error: Exception | None = None  # building sdpa_core's bias raised


def build_masks(mask: Mask | None, is_causal: bool, q_shape, seq_kv: int, query_dtype) -> Built:
    leading, seq_q = q_shape[:-2], q_shape[-2]
    if mask is None:
        return Built(None, is_causal, None, is_causal)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about lower-right with Sq > Skv at construction
        if mask.kind == "tensor":
            t = _mask_values(mask.values, _resolve(mask.shape, leading, seq_q, seq_kv), query_dtype,
                             mask.float_dtype)
            return Built(t, is_causal, t, is_causal)
        if mask.kind == "torch_causal":
            make = torch_bias.causal_upper_left if mask.variant == "upper_left" else torch_bias.causal_lower_right
            tb = make(seq_q, seq_kv)
            return Built(tb, is_causal, tb, is_causal)
        if mask.kind == "torch_variant":
            variant = torch_bias.CausalVariant[mask.variant.upper()]
            tb = torch_bias.CausalBias(variant, seq_q, seq_kv)
            try:
                ours = sdpa_core.CausalBias(variant, seq_q, seq_kv)
            except Exception as e:  # noqa: BLE001 - reported as sdpa_core's answer
                return Built(tb, is_causal, None, is_causal, ours_error=e)
            return Built(tb, is_causal, ours, is_causal)
    # sdpa_core's own biases: torch gets the materialized equivalent, is_causal folded in.
    keep_ul = _keep_causal("upper_left", seq_q, seq_kv)
    try:
        if mask.kind == "tensor_bias":
            t = _mask_values(mask.values, _resolve(mask.shape, leading, seq_q, seq_kv), query_dtype,
                             mask.float_dtype)
            dense = t.reshape((1,) * max(0, 2 - t.dim()) + tuple(t.shape))  # torch needs >= 2 dims
            if is_causal:
                dense = _with_causal(dense, keep_ul)
            return Built(dense, False, sdpa_core.TensorBias(t), is_causal)
        if mask.kind == "causal_bias":
            variant = sdpa_core.CausalVariant[mask.variant.upper()]
            return Built(_keep_causal(mask.variant, seq_q, seq_kv), is_causal,
                         sdpa_core.CausalBias(variant, seq_q, seq_kv), is_causal)
        if mask.kind == "alibi":
            heads = leading[-1]
            slopes = torch.rand((leading[0], heads) if mask.per_batch else (heads,)) * 0.5 + 0.05
            # float64 inputs must be computed in float64; torch accepts a float32 mask for any other dtype
            dense = _alibi_additive(slopes, seq_q, seq_kv,
                                    torch.float64 if query_dtype == torch.float64 else torch.float32)
            if mask.variant:
                dense = _with_causal(dense, _keep_causal(mask.variant, seq_q, seq_kv))
            if is_causal:
                dense = _with_causal(dense, keep_ul)
            enum = torch_bias.CausalVariant if mask.torch_enum else sdpa_core.CausalVariant
            causal = None if not mask.variant else enum[mask.variant.upper()]
            return Built(dense, False, sdpa_core.AlibiBias(slopes, seq_q, seq_kv, causal=causal), is_causal)
    except Exception as e:  # noqa: BLE001 - sdpa_core refused to build its bias: reported as its answer
        return Built(None, False, None, is_causal, ours_error=e)
    raise ValueError(f"unknown mask kind {mask.kind}")
