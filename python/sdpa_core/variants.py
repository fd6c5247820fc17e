"""Causal variants. Values match libsdpa's ``sdpa::CausalVariant`` so they cross the binding unchanged."""

from __future__ import annotations

import enum


class CausalVariant(enum.IntEnum):
    r"""Which diagonal a causal mask is aligned to. Drawn for Sq = 3, Skv = 4 (1 = attend)::

        UPPER_LEFT        LOWER_RIGHT
        1 0 0 0           1 1 0 0
        1 1 0 0           1 1 1 0
        1 1 1 0           1 1 1 1

    ``UPPER_LEFT`` keeps key j for query i when j <= i (what ``is_causal=True`` means in PyTorch).
    ``LOWER_RIGHT`` keeps j <= i + (Skv - Sq): the last query sees every key, as in decoding with a
    KV cache. With Sq > Skv, lower-right masks whole rows at the top; those rows output zeros.
    """

    UPPER_LEFT = 1
    LOWER_RIGHT = 2


def as_causal_variant(variant) -> CausalVariant:
    """``variant`` as our CausalVariant: ours as it is, and torch's ``torch.nn.attention.bias.CausalVariant``
    (same names, same values) as its equivalent.

    Raises:
        SdpaTypeError: anything else.
    """
    if isinstance(variant, CausalVariant):
        return variant
    from torch.nn.attention.bias import CausalVariant as TorchCausalVariant

    if isinstance(variant, TorchCausalVariant):
        return CausalVariant[variant.name]
    from .errors import SdpaTypeError

    raise SdpaTypeError(f"causal variant must be a sdpa_core.CausalVariant or torch.nn.attention.bias.CausalVariant; "
                        f"got {variant!r}")
