"""Where a built-in bias goes: a fused libsdpa kernel when one covers the inputs, else PyTorch.

``KernelBias`` is a bias as libsdpa sees it (an additive part plus a causal variant). ``attention`` runs
it, training calls included (the fused forward and backward as one autograd node, ``_autograd.py``);
``plan`` says what ``attention`` would do and why, for ``explain()``.
"""

from __future__ import annotations

import math

import torch

from . import _autograd, _fallback, _kernels, _routing
from ._kernel_bias import KernelBias


def default_scale(query: torch.Tensor, scale: float | None) -> float:
    return 1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)


_FUSED_DTYPES = (torch.float16, torch.bfloat16)


def needs_grad(query, key, value) -> bool:
    """A training call: autograd will ask for the gradient of query, key or value."""
    return torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad)


def dense_needs_grad(bias: KernelBias) -> bool:
    """A dense bias that autograd will want a gradient for (a learned TensorBias). The eager fused backward
    computes it; the custom ops of torch.compile do not carry it (see python_refusals)."""
    return bias.dense is not None and bias.dense.requires_grad and torch.is_grad_enabled()


def slopes_need_grad(bias: KernelBias) -> bool:
    """ALiBi slopes that require grad: no kernel computes their gradient, so PyTorch runs the call."""
    return bias.slopes is not None and bias.slopes.requires_grad and torch.is_grad_enabled()


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
    if slopes_need_grad(bias):
        reasons.append("the ALiBi slopes require grad: the fused backward computes no bias gradient for ALiBi "
                       "slopes, so PyTorch runs the forward and its backward")
    if dense_needs_grad(bias) and torch.compiler.is_compiling():
        reasons.append("under torch.compile, a bias that requires grad runs on torch: the custom ops carry no "
                       "bias gradient (eager calls run the fused backward with it)")
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
    dense, slopes = bias.dense, bias.slopes
    return (query.is_cuda and query.dtype in _FUSED_DTYPES and dropout_p <= 0.0
            and value.shape[-1] == query.shape[-1] and query.numel() != 0 and key.numel() != 0
            and query.stride(-1) == 1 and key.stride(-1) == 1 and value.stride(-1) == 1
            and (dense is None or dense.dtype is torch.bool or dense.dtype is query.dtype)
            and not (((dense is not None and dense.requires_grad and torch.compiler.is_compiling())
                      or (slopes is not None and slopes.requires_grad))
                     and torch.is_grad_enabled()))


def attention(query, key, value, bias: KernelBias, scale: float | None, dropout_p: float,
              enable_gqa: bool) -> torch.Tensor:
    """The whole dispatch: sdpa_core's fused kernels, or PyTorch with the cheapest equivalent request.

    A training call (query, key, value or a float dense bias need grad) runs fused only where libsdpa has both
    the forward and the backward kernel (for a learned bias, one that writes its gradient too): the pair is
    one autograd node, and a torch forward cannot feed our backward."""
    compiling = torch.compiler.is_compiling()
    bias_grad = dense_needs_grad(bias)
    # a learned bias makes a training call even where query, key and value need no gradient
    training = bias_grad or needs_grad(query, key, value)
    if fused_eligible(query, key, value, bias, dropout_p) and not _routing.torch_is_faster(query, bias, training):
        if compiling:
            from . import _compiled  # imported while tracing only: eager users never load dynamo or the ops

            out = _compiled.attention(query, key, value, bias, default_scale(query, scale), enable_gqa, training)
            if out is not None:
                return out
        else:
            query, key, value = _kernels.aligned(query, key, value)
            scale_value = default_scale(query, scale)
            if not training:
                out = _kernels.try_forward(query, key, value, bias, scale_value)
                if out is not None:
                    return out
            elif _kernels.select_training(query, key, value, bias, scale_value,
                                          torch.are_deterministic_algorithms_enabled(), bias_grad)[1]:
                return _autograd.FusedAttention.apply(query, key, value, bias.dense, bias, scale_value)
    elif query.is_cuda and not compiling:
        query, key, value = _kernels.aligned(query, key, value)  # torch's kernels get some misaligned layouts wrong
    return _fallback.attention(query, key, value, bias, scale, dropout_p, enable_gqa)


class Plan:
    """What attention() does with a call, for explain(): ``path`` is "fused:<kernel>" or "torch:<request>",
    ``reasons`` why it is not fused (or notes on the fused path). ``backward`` is "" for a call that needs
    no gradient, else "fused:<kernel>" (with notes such as "(with the bias gradient)") or "torch" (autograd
    through the torch request)."""

    __slots__ = ("path", "reasons", "backward")

    def __init__(self, path: str, reasons: list[str], backward: str):
        self.path, self.reasons, self.backward = path, reasons, backward


def plan(query, key, value, bias: KernelBias, scale: float | None, dropout_p: float) -> Plan:
    """The path attention() takes for these arguments, and why. Launches nothing."""
    reasons = python_refusals(query, key, value, bias, dropout_p)
    bias_grad = dense_needs_grad(bias)
    training = bias_grad or needs_grad(query, key, value)  # as attention() decides it
    torch_backward = "torch" if training else ""
    if not reasons:  # CUDA inputs: python_refusals refuses any other device
        faster = _routing.torch_is_faster(query, bias, training)
        if faster:
            return Plan("torch:" + _fallback.describe(bias, query, key), [faster], torch_backward)
        aligned = _kernels.aligned(query, key, value)
        scale_value = default_scale(query, scale)
        deterministic = torch.are_deterministic_algorithms_enabled()
        if training:
            kernel, backward, reason = _kernels.select_training(*aligned, bias, scale_value, deterministic, bias_grad)
            if kernel and not backward:
                kernel, reason = "", (f"no fused backward for this call ({reason}); PyTorch runs the forward too: "
                                      f"a training call runs both passes on one path")
        else:
            (kernel, reason), backward = _kernels.select(*aligned, bias, scale_value), ""
        if kernel:
            copied = [n for n, a, t in zip(("query", "key", "value"), aligned, (query, key, value)) if a is not t]
            notes = [f"{', '.join(copied)} copied to an aligned layout first"] if copied else []
            if backward and bias_grad:
                backward += " (with the bias gradient)"
            if backward and deterministic:
                backward += " (deterministic: torch.use_deterministic_algorithms is on)"
            return Plan("fused:" + kernel, notes, "fused:" + backward if backward else "")
        reasons.append(reason)
    return Plan("torch:" + _fallback.describe(bias, query, key), reasons, torch_backward)
