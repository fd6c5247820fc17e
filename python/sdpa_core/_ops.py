"""The fused kernels as ``torch.library`` custom ops, so ``torch.compile(fullgraph=True)`` sees opaque nodes
with known output shapes instead of tracing pointers. Eager calls skip them (an op call costs ~17 us).

* ``attention_fwd``: the forward of a call that needs no gradient; PyTorch's SDPA where no kernel runs.
* ``attention_fwd_lse`` and ``attention_bwd``: a training call. The forward op also returns the
  log-sum-exp and has ``register_autograd``: it saves q, k, v, out and the LSE, and its backward is
  ``attention_bwd``, the fused backward kernel. Where libsdpa refuses at run time both run ``_math``
  (plain torch, scores materialized), so each op is a total function and its LSE is always real. The
  dispatcher sends only calls that ``_kernels.covers_training`` says libsdpa covers here; the rest run
  through PyTorch's own SDPA, traced with its backward.

Outputs are contiguous, as the fake implementations say: compiled graphs rely on their strides.
"""

from __future__ import annotations

import torch

from . import _fallback, _kernels, _math
from ._kernel_bias import BiasKind, KernelBias
from .variants import CausalVariant


def _bias(bias_kind: int, causal: int, slopes, dense) -> KernelBias:
    return KernelBias(BiasKind(bias_kind), CausalVariant(causal) if causal else None, slopes=slopes, dense=dense)


def _out_shape(query, value) -> tuple[int, ...]:
    return (*query.shape[:3], value.shape[-1])


@torch.library.custom_op("sdpa_core::attention_fwd", mutates_args=())
def attention_fwd(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias_kind: int, causal: int,
                  slopes: torch.Tensor | None, dense: torch.Tensor | None, scale: float,
                  enable_gqa: bool) -> torch.Tensor:
    bias = _bias(bias_kind, causal, slopes, dense)
    if query.is_cuda:
        out = query.new_empty(_out_shape(query, value))
        if _kernels.try_forward(*_kernels.aligned(query, key, value), bias, scale, out=out) is not None:
            return out
    return _fallback.attention(query, key, value, bias, scale, 0.0, enable_gqa).contiguous()


@attention_fwd.register_fake
def _(query, key, value, bias_kind, causal, slopes, dense, scale, enable_gqa):
    return query.new_empty(_out_shape(query, value))


@torch.library.custom_op("sdpa_core::attention_fwd_lse", mutates_args=())
def attention_fwd_lse(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias_kind: int, causal: int,
                      slopes: torch.Tensor | None, dense: torch.Tensor | None,
                      scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, LSE (B, Hq, Sq) float32): what the fused backward reads."""
    bias = _bias(bias_kind, causal, slopes, dense)
    if query.is_cuda:
        out = query.new_empty(_out_shape(query, value))
        result = _kernels.try_forward_lse(*_kernels.aligned(query, key, value), bias, scale, out=out)
        if result is not None:
            return result
    out, lse = _math.forward_lse(query, key, value, bias, scale)
    return out.contiguous(), lse.contiguous()


@attention_fwd_lse.register_fake
def _(query, key, value, bias_kind, causal, slopes, dense, scale):
    return query.new_empty(_out_shape(query, value)), query.new_empty(query.shape[:3], dtype=torch.float32)


@torch.library.custom_op("sdpa_core::attention_bwd", mutates_args=())
def attention_bwd(grad_out: torch.Tensor, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  out: torch.Tensor, lse: torch.Tensor, bias_kind: int, causal: int, slopes: torch.Tensor | None,
                  dense: torch.Tensor | None, scale: float,
                  deterministic: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) of attention_fwd_lse; dk and dv have key's heads (summed over each query-head group)."""
    bias = _bias(bias_kind, causal, slopes, dense)
    if query.is_cuda:
        grads = (query.new_empty(query.shape), key.new_empty(key.shape), value.new_empty(value.shape))
        q, k, v = _kernels.aligned(query, key, value)
        if _kernels.try_backward(q, k, v, out, lse, grad_out, bias, scale, deterministic, grads=grads) is not None:
            return grads
    return tuple(g.contiguous() for g in _math.backward(grad_out, query, key, value, out, lse, bias, scale))


@attention_bwd.register_fake
def _(grad_out, query, key, value, out, lse, bias_kind, causal, slopes, dense, scale, deterministic):
    return query.new_empty(query.shape), key.new_empty(key.shape), value.new_empty(value.shape)


def _setup_context(ctx, inputs, output):
    query, key, value, bias_kind, causal, slopes, dense, scale = inputs
    out, lse = output
    ctx.save_for_backward(query, key, value, out, lse, slopes, dense)
    ctx.bias_kind, ctx.causal, ctx.scale = bias_kind, causal, scale


def _backward(ctx, grad_out, grad_lse):
    # grad_lse is ignored: the LSE is an internal of the pair, never a user-visible output
    query, key, value, out, lse, slopes, dense = ctx.saved_tensors
    dq, dk, dv = attention_bwd(grad_out, query, key, value, out, lse, ctx.bias_kind, ctx.causal, slopes, dense,
                               ctx.scale, torch.are_deterministic_algorithms_enabled())
    return dq, dk, dv, None, None, None, None, None


attention_fwd_lse.register_autograd(_backward, setup_context=_setup_context)
