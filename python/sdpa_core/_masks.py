"""Plain-torch builders of every built-in bias as a dense tensor.

These are the slow, obviously-correct definitions: ``materialize()`` of each bias and the PyTorch fallback
use them; fused kernels never do.
"""

from __future__ import annotations

import torch

from .variants import CausalVariant


def causal_keep(variant: CausalVariant, seq_len_q: int, seq_len_kv: int, device=None) -> torch.Tensor:
    """Bool (Sq, Skv): True where key j is kept for query i (j <= i + offset)."""
    offset = seq_len_kv - seq_len_q if variant == CausalVariant.LOWER_RIGHT else 0
    i = torch.arange(seq_len_q, device=device).unsqueeze(1)
    j = torch.arange(seq_len_kv, device=device).unsqueeze(0)
    return j <= i + offset


def alibi_additive(slopes: torch.Tensor, seq_len_q: int, seq_len_kv: int, device=None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B or 1, H, Sq, Skv) of ``dtype``: -slope[b, h] * |i + (Skv - Sq) - j|."""
    device = slopes.device if device is None else device
    slopes = slopes.to(device=device, dtype=dtype)
    if slopes.dim() == 1:
        slopes = slopes.unsqueeze(0)
    i = torch.arange(seq_len_q, device=device).unsqueeze(1)
    j = torch.arange(seq_len_kv, device=device).unsqueeze(0)
    distance = (i + (seq_len_kv - seq_len_q) - j).abs().to(dtype)
    return -slopes[:, :, None, None] * distance


def to_additive(mask: torch.Tensor) -> torch.Tensor:
    """Float32 additive form of a bool mask (True = attend) or a float bias."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_fill_(~mask, float("-inf"))
    return mask.to(torch.float32)


def add_causal(additive: torch.Tensor | None, variant: CausalVariant, seq_len_q: int, seq_len_kv: int,
               device) -> torch.Tensor:
    """``additive`` (or zeros) with -inf where the causal variant removes a key."""
    keep = causal_keep(variant, seq_len_q, seq_len_kv, device)
    causal = to_additive(keep)
    return causal if additive is None else additive + causal
