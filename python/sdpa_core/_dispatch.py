"""Where a built-in bias goes: a fused libsdpa kernel when one covers the inputs, else PyTorch.

``KernelBias`` is a bias as libsdpa sees it (an additive part plus a causal variant). ``attention`` runs
it; ``plan`` says what ``attention`` would do and why, for ``explain()``.
"""

from __future__ import annotations

import math

import torch

from . import _fallback, _kernels, _routing
from ._kernel_bias import KernelBias


def default_scale(query: torch.Tensor, scale: float | None) -> float:
    return 1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)


_FUSED_DTYPES = (torch.float16, torch.bfloat16)


def needs_grad(query, key, value, dense) -> bool:
    return (torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad
                                         or (dense is not None and dense.requires_grad)))


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
    if needs_grad(query, key, value, bias.dense):
        reasons.append("inputs require grad: sdpa_core has no fused backward yet, so PyTorch runs the forward "
                       "and its backward")
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
            and not needs_grad(query, key, value, dense)
            and value.shape[-1] == query.shape[-1] and query.numel() != 0 and key.numel() != 0
            and query.stride(-1) == 1 and key.stride(-1) == 1 and value.stride(-1) == 1
            and (dense is None or dense.dtype is torch.bool or dense.dtype is query.dtype))


def attention(query, key, value, bias: KernelBias, scale: float | None, dropout_p: float,
              enable_gqa: bool) -> torch.Tensor:
    """The whole dispatch: sdpa_core's fused kernel, or PyTorch with the cheapest equivalent request."""
    if (fused_eligible(query, key, value, bias, dropout_p)
            and not _routing.torch_is_faster(query, bias)):
        if torch.compiler.is_compiling():
            from . import _ops  # registered lazily: importing torch.library ops costs eager users nothing

            return _ops.attention_fwd(query, key, value, int(bias.kind), int(bias.causal or 0), bias.slopes,
                                      bias.dense, default_scale(query, scale), enable_gqa)
        out = _kernels.try_forward(*_kernels.aligned(query, key, value), bias, default_scale(query, scale))
        if out is not None:
            return out
    elif query.is_cuda and not torch.compiler.is_compiling():
        query, key, value = _kernels.aligned(query, key, value)  # torch's kernels get some misaligned layouts wrong
    return _fallback.attention(query, key, value, bias, scale, dropout_p, enable_gqa)


def plan(query, key, value, bias: KernelBias, scale: float | None, dropout_p: float) -> tuple[str, list[str]]:
    """(path, reasons): path is "fused:<kernel>", "torch:<request>" with the reasons it is not fused."""
    reasons = python_refusals(query, key, value, bias, dropout_p)
    if not reasons and query.is_cuda:
        faster = _routing.torch_is_faster(query, bias)
        if faster:
            return "torch:" + _fallback.describe(bias, query, key), [faster]
        aligned = _kernels.aligned(query, key, value)
        kernel, reason = _kernels.select(*aligned, bias, default_scale(query, scale))
        if kernel:
            copied = [n for n, a, t in zip(("query", "key", "value"), aligned, (query, key, value)) if a is not t]
            notes = [f"{', '.join(copied)} copied to an aligned layout first"] if copied else []
            return "fused:" + kernel, notes
        reasons.append(reason)
    return "torch:" + _fallback.describe(bias, query, key), reasons
