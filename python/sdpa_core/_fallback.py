"""The PyTorch path: each bias handed to torch's SDPA as the cheapest request torch has for it.

Used wherever no sdpa_core kernel covers a call (CPU, float32/float64, dropout, gradients, ...) and where
torch has the faster kernel (``_routing.py``). Cheapest means: ``is_causal=True`` for upper-left causal,
torch's own lower-right ``CausalBias`` for lower-right, a bool or float mask as it is, anything else
materialized once in the query's dtype (torch requires it, and it is what a torch user would pass), and
never a float32 copy of q/k/v.

Rows whose every key is masked output zeros, as on the fused path. A float bias value below
``MASKED_BELOW`` counts as masked: fused kernels see it as -inf (its product with log2(e) overflows
float32), so ``torch.finfo(bfloat16 / float32).min`` masks behave the same on every path.
"""

from __future__ import annotations

import math
import weakref

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right as _torch_causal_lower_right

from . import _masks
from .variants import CausalVariant

MASKED_BELOW = -2.35e38  # ~ -FLT_MAX / log2(e)

def attention(query, key, value, bias, scale: float | None, dropout_p: float, enable_gqa: bool) -> torch.Tensor:
    """softmax(q k^T * scale + bias) v through ``torch.nn.functional.scaled_dot_product_attention``."""
    seq_q, seq_kv = query.shape[-2], key.shape[-2]
    if query.numel() == 0 or key.numel() == 0 or value.numel() == 0:
        return _degenerate(query, key, value, bias, scale, dropout_p, enable_gqa)
    sdpa = _Sdpa(query, key, value, scale, dropout_p, enable_gqa)
    if bias.kind == 0:  # BiasKind.NONE
        out = _causal_only(sdpa, bias.causal, seq_q, seq_kv)
    elif bias.kind == 1 and not _wide_mask_ok(query.device) and not (
            bias.slopes.requires_grad and torch.is_grad_enabled()):  # ALiBi in half precision, slopes fixed
        mask, keep = _alibi_mask_half(bias, query, seq_q, seq_kv)
        out = sdpa(attn_mask=mask)
        if keep is not None:  # rows with no kept key are known from the causal pattern alone
            out = out.masked_fill(~keep.any(dim=-1, keepdim=True), 0.0)
    else:
        mask = _additive_mask(bias, query, seq_q, seq_kv)
        out = sdpa(attn_mask=mask).masked_fill(_dead_rows(mask), 0.0)
    if not query.is_cuda:
        # Some of torch's CPU kernels (torch 2.11's flash path) return zeros for a query row holding NaN;
        # the row's NaN is carried over so that every path propagates it, as the math does.
        out = out + query.sum(dim=-1, keepdim=True).mul(0).to(out.dtype)
    return out


def _additive_mask(bias, query, seq_q: int, seq_kv: int) -> torch.Tensor:
    """The bias (ALiBi or dense, plus its causal part) as one attn_mask torch takes: bool, the query's
    dtype, or float32 where torch computes with a float32 mask as fast (see _wide_mask_ok)."""
    wide = query.dtype in (torch.float16, torch.bfloat16) and _wide_mask_ok(query.device)
    if bias.kind == 1:  # BiasKind.ALIBI
        mask = _masks.alibi_additive(bias.slopes, seq_q, seq_kv, query.device,
                                     torch.promote_types(query.dtype, torch.float32))
        if bias.causal is not None:
            mask = with_causal(mask, bias.causal, seq_q, seq_kv)
        if not wide:
            # Softmax ignores a per-row constant: shifting each row's largest kept value to 0 before rounding
            # keeps the values that matter small and exact in half precision (rows far from the diagonal
            # would otherwise hold only large, coarsely rounded values).
            row_max = mask.amax(dim=-1, keepdim=True).nan_to_num(0.0, neginf=0.0)
            mask = (mask - row_max).to(query.dtype)
        return mask
    mask = bias.dense
    if mask.dtype != torch.bool and mask.dtype != query.dtype and not (wide and mask.dtype == torch.float32):
        mask = mask.to(query.dtype)
    if mask.dim() < 2:  # torch's 4-D path indexes dim -2 of the mask
        mask = mask.reshape((1,) * (2 - mask.dim()) + tuple(mask.shape))
    if query.is_cuda and mask.shape[-1] == 1 and seq_kv > 1:
        mask = _keys_broadcast_mask(mask, query.dtype, seq_kv)
    if bias.causal is not None:
        mask = with_causal(mask, bias.causal, seq_q, seq_kv)
    return mask


def _alibi_mask_half(bias, query, seq_q: int, seq_kv: int):
    """ALiBi (+ causal) as one (B or 1, H, Sq, Skv) mask in the query's half-precision dtype, written in one
    pass, and the causal keep pattern (or None).

    Distances are computed once for all heads, and each row's are shifted so its nearest kept key sits at
    0: softmax ignores a per-row constant, and small values round exactly in half precision (rows far from
    the diagonal would otherwise hold only large, coarsely rounded values). Then -slope x distance per head
    goes straight into the output; removed keys get -inf in place. No float32 (H, Sq, Skv) temporary."""
    device = query.device
    i = torch.arange(seq_q, device=device, dtype=torch.float32).unsqueeze(1)
    j = torch.arange(seq_kv, device=device, dtype=torch.float32).unsqueeze(0)
    dist = (i + (seq_kv - seq_q) - j).abs()
    keep = None
    if bias.causal is not None:
        keep = _masks.causal_keep(bias.causal, seq_q, seq_kv, device)
        nearest = dist.masked_fill(~keep, float("inf")).amin(dim=-1, keepdim=True)
        dist = dist - nearest.nan_to_num(0.0, posinf=0.0)
    else:
        dist = dist - dist.amin(dim=-1, keepdim=True)
    slopes = bias.slopes.to(device=device, dtype=torch.float32)
    slopes = slopes.unsqueeze(0) if slopes.dim() == 1 else slopes
    mask = torch.empty((slopes.shape[0], slopes.shape[1], seq_q, seq_kv), dtype=query.dtype, device=device)
    torch.mul(dist.to(query.dtype), (-slopes).to(query.dtype)[:, :, None, None], out=mask)
    if keep is not None:
        mask.masked_fill_(~keep, float("-inf"))
    return mask, keep


def _keys_broadcast_mask(mask: torch.Tensor, dtype: torch.dtype, seq_kv: int) -> torch.Tensor:
    """A (..., 1) mask broadcast along the keys, as an additive mask of ``dtype`` in 16-byte-aligned rows.

    torch 2.11's CUDA kernels mishandle this broadcast: the mem-efficient kernel rejects a float bias with
    stride 0 along the keys, and a (Sq, 1) bool mask (which torch converts itself into unpadded rows)
    faulted with a misaligned address on the H200 (fp16, Sq = Skv = 17). Converting here, into rows padded
    as torch pads its own biases, gives its kernels a layout they take (the float case ran clean there)."""
    padded = torch.empty((*mask.shape[:-1], -(-seq_kv // 16) * 16), dtype=dtype, device=mask.device)[..., :seq_kv]
    if mask.dtype == torch.bool:
        return padded.zero_().masked_fill_(~mask.expand(*mask.shape[:-1], seq_kv), float("-inf"))
    return padded.copy_(mask.expand(*mask.shape[:-1], seq_kv))


def _wide_mask_ok(device: torch.device) -> bool:
    """Whether float16/bfloat16 q/k/v get a float32 mask (exact ALiBi distances): on CPU, where torch's
    kernels take one. On CUDA torch's mem-efficient kernel rejects it, and a cuDNN run with one (H200,
    2026-11-26: as fast as bf16) failed the gradient tests, so CUDA gets the row-relative half-precision
    ALiBi of _additive_mask."""
    return device.type == "cpu"


def _degenerate(query, key, value, bias, scale, dropout_p: float, enable_gqa: bool) -> torch.Tensor:
    """Empty dimensions and head_dim 0 in plain torch ops (some of torch's kernels divide by these sizes).
    Scores are q k^T * scale + bias; a row with no key left (Skv = 0 included) is 0."""
    if enable_gqa and key.shape[-3] not in (0, query.shape[-3]):
        group = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(group, dim=-3), value.repeat_interleave(group, dim=-3)
    compute = torch.promote_types(query.dtype, torch.float32)
    head_dim = query.shape[-1]
    factor = (1.0 / math.sqrt(head_dim) if head_dim else 1.0) if scale is None else scale
    s = scores(query, key, bias, factor, compute)
    dead = (s < MASKED_BELOW).all(dim=-1, keepdim=True)
    p = torch.softmax(s.masked_fill(dead, 0.0), dim=-1).masked_fill(dead, 0.0)
    if dropout_p > 0.0:
        p = torch.nn.functional.dropout(p, dropout_p)
    return (p @ value.to(compute)).to(query.dtype)


def scores(query, key, bias, factor: float, compute: torch.dtype) -> torch.Tensor:
    """q k^T * factor + bias in ``compute`` precision (keys a mask removes are -inf; additive values below
    MASKED_BELOW are left for the caller); ``key`` has the query's heads. Materializes (B, H, Sq, Skv): for
    the plain-torch paths that need the scores themselves."""
    seq_q, seq_kv = query.shape[-2], key.shape[-2]
    s = (query.to(compute) @ key.to(compute).transpose(-1, -2)) * factor
    if bias.kind != 0 or bias.causal is not None:
        mask = (_masks.causal_keep(bias.causal, seq_q, seq_kv, query.device) if bias.kind == 0
                else _additive_mask(bias, query, seq_q, seq_kv))
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask.to(compute)
    return s


def describe(bias, query, key) -> str:
    """The request ``attention`` hands torch, in words (for ``explain()``)."""
    seq_q, seq_kv = query.shape[-2], key.shape[-2]
    if bias.kind == 0:
        if bias.causal is None:
            return "torch SDPA, no mask"
        if bias.causal == CausalVariant.UPPER_LEFT or seq_q == seq_kv:
            return "torch SDPA with is_causal=True"
        if seq_q < seq_kv:
            return "torch SDPA with torch.nn.attention.bias.causal_lower_right"
        return f"torch SDPA with is_causal=True on the last {seq_kv} query rows (the first {seq_q - seq_kv} see no key)"
    wide = query.dtype in (torch.float16, torch.bfloat16) and _wide_mask_ok(query.device)
    if bias.kind == 1:
        dtype = "float32" if wide else str(query.dtype).replace("torch.", "")
        what = f"ALiBi materialized as a {dtype} (.., {seq_q}, {seq_kv}) mask"
    elif bias.dense.dtype == torch.bool or bias.dense.dtype == query.dtype or (wide and bias.dense.dtype == torch.float32):
        what = f"the {str(bias.dense.dtype).replace('torch.', '')} mask as it is"
    else:
        what = f"the float mask converted to {str(query.dtype).replace('torch.', '')}"
    causal = "" if bias.causal is None else f", {bias.causal.name.lower()} causal folded in"
    return f"torch SDPA with {what}{causal}"


class _Sdpa:
    """torch's SDPA with the arguments every request shares bound."""

    __slots__ = ("q", "k", "v", "kwargs")

    def __init__(self, query, key, value, scale, dropout_p, enable_gqa):
        self.q, self.k, self.v = query, key, value
        self.kwargs = {"dropout_p": dropout_p, "scale": scale, "enable_gqa": enable_gqa}

    def __call__(self, query=None, **request) -> torch.Tensor:
        query = self.q if query is None else query
        scale = self.kwargs["scale"]
        if scale is not None and scale < 0 and query.is_cuda:
            # torch 2.11's cuDNN attention returns NaN for a negative scale (H200, 2026-11-26: bf16
            # (1, 3, 1, 8) and (2, 6, 17, 8) GQA); its other backends compute it right.
            with sdpa_kernel(_NOT_CUDNN):
                return F.scaled_dot_product_attention(query, self.k, self.v, **request, **self.kwargs)
        return F.scaled_dot_product_attention(query, self.k, self.v, **request, **self.kwargs)


_NOT_CUDNN = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def _causal_only(sdpa: _Sdpa, variant: CausalVariant | None, seq_q: int, seq_kv: int) -> torch.Tensor:
    if variant is None:
        return sdpa()
    scale = sdpa.kwargs["scale"]
    if scale is not None and scale < 0:  # torch's CPU flash kernel gives NaN for is_causal with scale < 0
        keep = _masks.causal_keep(variant, seq_q, seq_kv, sdpa.q.device)
        out = sdpa(attn_mask=keep)
        # lower-right with Sq > Skv leaves the top rows without a key; torch's CUDA kernels disagree there
        return out if seq_q <= seq_kv else out.masked_fill(~keep.any(dim=-1, keepdim=True), 0.0)
    if variant == CausalVariant.UPPER_LEFT or seq_q == seq_kv:
        return sdpa(is_causal=True)
    if seq_q < seq_kv:
        if torch.compiler.is_compiling():  # torch's CausalBias (a Tensor subclass) cannot be traced
            return sdpa(attn_mask=_masks.causal_keep(variant, seq_q, seq_kv, sdpa.q.device))
        return sdpa(attn_mask=_torch_causal_lower_right(seq_q, seq_kv))
    # Sq > Skv, lower-right: the first Sq - Skv rows see no key (zeros); the last Skv rows are an
    # upper-left causal square. torch's lower-right bias would give NaN rows here.
    dead = seq_q - seq_kv
    tail = sdpa(query=sdpa.q.narrow(-2, dead, seq_kv), is_causal=True)
    head = tail.new_zeros((*tail.shape[:-2], dead, tail.shape[-1]))
    return torch.cat([head, tail], dim=-2)


def with_causal(mask: torch.Tensor, variant: CausalVariant, seq_q: int, seq_kv: int) -> torch.Tensor:
    keep = _masks.causal_keep(variant, seq_q, seq_kv, mask.device)
    if mask.dtype == torch.bool:
        return mask & keep
    return mask.masked_fill(~keep, float("-inf"))


def _dead_rows(mask: torch.Tensor) -> torch.Tensor:
    """Where ``mask`` removes every key of a row, (..., Sq, 1) bool. Reads the mask once, in its own broadcast
    shape (a (B, 1, 1, Skv) padding mask costs B x Skv reads), and remembers the answer for the mask tensor
    while its version counter stands still: a model passes one mask to every layer, and for a dense (1, H, S,
    S) bias this pass costs ~5% of torch's attention (H100, S=4k fwd+bwd). Never remembered while tracing,
    while a CUDA graph is captured (a replay may bring new mask values under the same version) or for an
    inference-mode mask (no version counter)."""
    remember = not torch.compiler.is_compiling() and not mask.is_inference() and not (
        mask.is_cuda and torch.cuda.is_current_stream_capturing())  # inference tensors keep no version counter
    if remember:  # (ids, versions and weak references are eager-only: dynamo must not see them)
        key = (id(mask), mask.dtype, tuple(mask.shape), tuple(mask.stride()), mask.storage_offset())
        hit = _DEAD_ROWS.get(key)
        if hit is not None and hit[0]() is mask and hit[1] == mask._version:
            return hit[2]
    if mask.dtype == torch.bool:
        dead = ~mask.any(dim=-1, keepdim=True)
    else:  # one reading pass, no full-size temporary
        dead = mask.amax(dim=-1, keepdim=True) < MASKED_BELOW
    if remember:
        if len(_DEAD_ROWS) >= _DEAD_ROWS_KEPT:
            _DEAD_ROWS.pop(next(iter(_DEAD_ROWS)))
        _DEAD_ROWS[key] = (weakref.ref(mask), mask._version, dead)
    return dead


# id-keyed, each entry checked against a weak reference to its mask (an id is reused once its tensor dies);
# a few entries cover the masks one model step uses.
_DEAD_ROWS: dict[tuple, tuple] = {}
_DEAD_ROWS_KEPT = 8
