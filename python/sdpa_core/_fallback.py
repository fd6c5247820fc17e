"""The PyTorch path: materialize the bias, compute with torch, and give fully masked rows zeros.

Used on CPU and wherever no fused kernel fits (``explain()`` says why). With a bias present it computes
in float32 (or wider) so large ALiBi distances keep their precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attention(query, key, value, bias, scale: float, dropout_p: float) -> torch.Tensor:
    gqa = query.shape[1] != key.shape[1]
    additive = bias.additive(query.shape[-2], key.shape[-2], query.device)
    if additive is None:
        return F.scaled_dot_product_attention(query, key, value, dropout_p=dropout_p, scale=scale, enable_gqa=gqa)
    compute = torch.promote_types(query.dtype, torch.float32)
    out = F.scaled_dot_product_attention(query.to(compute), key.to(compute), value.to(compute), attn_mask=additive,
                                         dropout_p=dropout_p, scale=scale, enable_gqa=gqa)
    # A row whose every key is masked attends to nothing: its output is 0 (softmax of all -inf is NaN).
    dead = torch.isneginf(additive).all(dim=-1, keepdim=True)
    return out.masked_fill(dead, 0.0).to(query.dtype)
