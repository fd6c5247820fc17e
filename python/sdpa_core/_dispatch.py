"""Where a built-in bias goes: a fused libsdpa kernel when one covers the inputs, else PyTorch.

``KernelBias`` is a bias as libsdpa sees it (an additive part plus a causal variant). ``attention`` runs
it; ``plan`` says what ``attention`` would do and why, for ``explain()``.
"""

from __future__ import annotations

import enum
import math

import torch

from . import _fallback, _kernels, _masks
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

    def additive(self, seq_len_q: int, seq_len_kv: int, device) -> torch.Tensor | None:
        """The whole bias as a float32 additive tensor (-inf = masked), or None when it is empty."""
        if self.kind == BiasKind.ALIBI:
            values = _masks.alibi_additive(self.slopes, seq_len_q, seq_len_kv, device)
        elif self.kind == BiasKind.DENSE:
            values = _masks.to_additive(self.dense.to(device))
        else:
            values = None
        if self.causal is not None:
            values = _masks.add_causal(values, self.causal, seq_len_q, seq_len_kv, device)
        return values


def default_scale(query: torch.Tensor, scale: float | None) -> float:
    return 1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)


_FUSED_DTYPES = (torch.float16, torch.bfloat16)


def python_refusals(query, key, value, bias: KernelBias, dropout_p: float) -> list[str]:
    """Reasons, knowable without libsdpa, why no fused kernel can run. Empty means: ask libsdpa.

    For explain(); the eager hot path asks the equivalent fused_eligible() instead."""
    reasons = []
    if query.device.type != "cuda":
        reasons.append(f"inputs are on {query.device.type}; fused kernels run on CUDA devices")
    if query.dtype not in _FUSED_DTYPES:
        reasons.append(f"fused kernels read float16 or bfloat16 inputs; got {query.dtype}")
    if dropout_p > 0.0:
        reasons.append("dropout_p > 0: the fused kernels have no dropout")
    if (query.requires_grad or key.requires_grad or value.requires_grad or
            (bias.dense is not None and bias.dense.requires_grad)) and torch.is_grad_enabled():
        reasons.append("inputs require grad: the fused backward pass is not implemented yet")
    if value.shape[-1] != query.shape[-1]:
        reasons.append(f"value head_dim {value.shape[-1]} differs from query head_dim {query.shape[-1]}")
    if query.numel() == 0 or key.numel() == 0:
        reasons.append("empty input")
    if query.stride(-1) != 1 or key.stride(-1) != 1 or value.stride(-1) != 1:
        reasons.append("query, key and value must be contiguous in their last dimension (strides "
                       f"{query.stride(-1)}, {key.stride(-1)}, {value.stride(-1)})")
    if bias.dense is not None and bias.dense.dtype is not torch.bool and bias.dense.dtype is not query.dtype:
        reasons.append(f"attn_mask dtype {bias.dense.dtype} is neither bool nor the query dtype {query.dtype}")
    return reasons


def fused_eligible(query, key, value, bias: KernelBias, dropout_p: float) -> bool:
    """python_refusals(...) == [], as one expression: the eager hot path asks this, explain() asks for the
    reasons. tests/python/test_api.py and test_fused_gpu.py check that the two agree."""
    dense = bias.dense
    return (query.is_cuda and query.dtype in _FUSED_DTYPES and dropout_p <= 0.0
            and not ((query.requires_grad or key.requires_grad or value.requires_grad
                      or (dense is not None and dense.requires_grad)) and torch.is_grad_enabled())
            and value.shape[-1] == query.shape[-1] and query.numel() != 0 and key.numel() != 0
            and query.stride(-1) == 1 and key.stride(-1) == 1 and value.stride(-1) == 1
            and (dense is None or dense.dtype is torch.bool or dense.dtype is query.dtype))


def attention(query, key, value, bias: KernelBias, scale: float | None, dropout_p: float) -> torch.Tensor:
    scale = default_scale(query, scale)
    if torch.compiler.is_compiling():
        from . import _ops  # registered lazily: importing torch.library ops costs eager users nothing

        return _ops.attention_fwd(query, key, value, int(bias.kind), int(bias.causal or 0), bias.slopes,
                                  bias.dense, scale, dropout_p)
    return attention_eager(query, key, value, bias, scale, dropout_p)


def attention_eager(query, key, value, bias: KernelBias, scale: float, dropout_p: float) -> torch.Tensor:
    if fused_eligible(query, key, value, bias, dropout_p):
        out = _kernels.try_forward(query, key, value, bias, scale)
        if out is not None:
            return out
    return _fallback.attention(query, key, value, bias, scale, dropout_p)


def plan(query, key, value, bias: KernelBias, scale: float | None, dropout_p: float) -> tuple[str | None, list[str]]:
    """(fused kernel name, []) or (None, every reason the fallback runs)."""
    reasons = python_refusals(query, key, value, bias, dropout_p)
    kernel, reason = _kernels.select(query, key, value, bias, default_scale(query, scale))
    if reason and reason not in reasons and query.dtype in (torch.float16, torch.bfloat16):
        reasons.append(reason)
    return (kernel if not reasons else None), reasons
