"""A bias as libsdpa sees it: an additive part (none, ALiBi slopes, a dense tensor) plus a causal variant.

Its own module so that every layer that passes biases around (dispatch, the torch route, the custom op,
the binding arguments) imports it without importing each other.
"""

from __future__ import annotations

import enum

import torch

from .variants import CausalVariant


class BiasKind(enum.IntEnum):
    """The additive part of a bias; values match libsdpa's ``sdpa::BiasKind``."""

    NONE = 0
    ALIBI = 1
    DENSE = 2


class KernelBias:
    """A plain slotted class, not a dataclass: it is built on every call of the eager hot path."""

    __slots__ = ("kind", "causal", "slopes", "dense")

    def __init__(self, kind: BiasKind, causal: CausalVariant | None, slopes: torch.Tensor | None = None,
                 dense: torch.Tensor | None = None):
        self.kind = kind
        self.causal = causal
        self.slopes = slopes  # ALIBI: float32 (H,) or (B, H)
        self.dense = dense  # DENSE: bool or float, broadcastable to (B, H, Sq, Skv)

    @classmethod
    def causal_only(cls, variant: CausalVariant | None) -> "KernelBias":
        return cls(BiasKind.NONE, variant)

    @classmethod
    def alibi(cls, slopes: torch.Tensor, variant: CausalVariant | None) -> "KernelBias":
        return cls(BiasKind.ALIBI, variant, slopes=slopes)

    @classmethod
    def dense_tensor(cls, dense: torch.Tensor, variant: CausalVariant | None) -> "KernelBias":
        return cls(BiasKind.DENSE, variant, dense=dense)


NO_MASK = KernelBias.causal_only(None)
CAUSAL = KernelBias.causal_only(CausalVariant.UPPER_LEFT)


def unmasked(is_causal: bool) -> KernelBias:
    """The bias of a call with ``attn_mask=None``: none, or upper-left causal (``is_causal``)."""
    return CAUSAL if is_causal else NO_MASK
