"""The fused forward as a ``torch.library`` custom op, so ``torch.compile(fullgraph=True)`` sees one opaque
node with a known output shape instead of tracing pointers. Eager calls skip it (it costs ~17 us a call).
"""

from __future__ import annotations

import torch

from . import _fallback, _kernels
from ._kernel_bias import BiasKind, KernelBias
from .variants import CausalVariant


@torch.library.custom_op("sdpa_core::attention_fwd", mutates_args=())
def attention_fwd(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias_kind: int, causal: int,
                  slopes: torch.Tensor | None, dense: torch.Tensor | None, scale: float,
                  enable_gqa: bool) -> torch.Tensor:
    bias = KernelBias(BiasKind(bias_kind), CausalVariant(causal) if causal else None, slopes=slopes, dense=dense)
    if query.is_cuda:
        out = _kernels.try_forward(*_kernels.aligned(query, key, value), bias, scale)
        if out is not None:
            return out
    return _fallback.attention(query, key, value, bias, scale, 0.0, enable_gqa)


@attention_fwd.register_fake
def _(query, key, value, bias_kind, causal, slopes, dense, scale, enable_gqa):
    batch, heads_q, seq_len_q, _ = query.shape
    return query.new_empty((batch, heads_q, seq_len_q, value.shape[-1]))
