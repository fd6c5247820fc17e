"""Inputs of any rank torch accepts, as the (B, H, S, D) problems libsdpa and the bias objects see.

PyTorch's SDPA takes (N, ..., H, L, E): 3-D inputs are one head dimension with no batch, 5-D and up have
several batch dimensions. When query, key and value share their leading dimensions, those flatten into
one batch dimension (a view wherever the strides allow) and a dense mask follows them. Anything else
torch accepts (2-D inputs, batch dimensions that broadcast between query and key) is not canonical:
it goes to PyTorch as it is.
"""

from __future__ import annotations

import math

import torch

from .bias import AttnBias, TensorBias
from .errors import SdpaValueError


def is_canonical(query, key, value) -> bool:
    """True when the three inputs have one rank >= 3 and identical leading (batch) dimensions."""
    rank = query.dim()
    return (rank >= 3 and key.dim() == rank and value.dim() == rank
            and query.shape[:-3] == key.shape[:-3] == value.shape[:-3])


def to_4d(query, key, value, attn_bias: AttnBias | None):
    """(query, key, value, attn_bias) as 4-D problems, and a function that gives the output its rank back.

    Returns None when a dense mask cannot follow the flattening (it has more dimensions than the query);
    the caller then hands the call to PyTorch unchanged.
    """
    rank = query.dim()
    if rank == 4:
        return query, key, value, attn_bias, _identity
    lead = query.shape[:-3]
    if isinstance(attn_bias, TensorBias):
        mask = _flatten_mask(attn_bias.bias, lead)
        if mask is None:
            return None
        attn_bias = TensorBias(mask)
    flat = [_flatten(t, lead) for t in (query, key, value)]
    return (*flat, attn_bias, lambda out: out.reshape(*lead, *out.shape[1:]))


def _identity(out):
    return out


def _flatten(t: torch.Tensor, lead) -> torch.Tensor:
    if not lead:  # 3-D: (H, L, E) -> (1, H, L, E)
        return t.unsqueeze(0)
    return t.reshape(math.prod(lead), *t.shape[-3:])


def _flatten_mask(mask: torch.Tensor, lead) -> torch.Tensor | None:
    """A mask broadcastable to (*lead, H, L, S) as one broadcastable to (prod(lead), H, L, S)."""
    if mask.dim() <= 3:
        return mask  # it broadcasts over the batch dimensions whatever they are
    if mask.dim() > len(lead) + 3:
        return None
    mask_lead = (1,) * (len(lead) - (mask.dim() - 3)) + tuple(mask.shape[:-3])
    tail = tuple(mask.shape[-3:])
    if all(s == 1 for s in mask_lead):
        return mask.reshape(1, *tail)
    # expand() is free; reshape copies only where broadcast batch dimensions cannot merge into one stride
    try:
        expanded = mask.reshape(*mask_lead, *tail).expand(*lead, *tail)
    except RuntimeError:
        raise SdpaValueError(f"attn_mask of shape {tuple(mask.shape)} does not broadcast to the inputs' batch "
                             f"dimensions {tuple(lead)}") from None
    return expanded.reshape(math.prod(lead), *tail)
