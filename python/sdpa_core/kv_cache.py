"""``kv_cache_append``: new keys and values written into a paged KV cache, the layout ``varlen_attn`` reads.

Plain torch index arithmetic, no host synchronization, so a serving loop can call it between decode steps
and capture it in a CUDA graph.
"""

from __future__ import annotations

import torch

from .errors import SdpaTypeError, SdpaValueError


def kv_cache_append(key_cache: torch.Tensor, value_cache: torch.Tensor, block_table: torch.Tensor,
                    cache_seqlens: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    cu_seq_new: torch.Tensor) -> torch.Tensor:
    r"""Appends each sequence's new tokens after the ones its cache holds; returns the new lengths.

    Sequence b's new tokens are rows ``cu_seq_new[b]:cu_seq_new[b+1]`` of ``key``/``value``; token t goes to
    logical position ``p = cache_seqlens[b] + t``, i.e. row ``p % page_size`` of pool page
    ``block_table[b, p // page_size]`` (the paged layout of ``varlen_attn``). The caches are written in place.

    Args:
        key_cache, value_cache: (total_pages, page_size, Hkv, D) page pools.
        block_table: int32 (N, max_pages); the pages a sequence grows into must already be assigned.
        cache_seqlens: int32 (N,): tokens each sequence holds before this call (``varlen_attn``'s
            ``seqused_k``).
        key, value: (T, Hkv, D) packed new tokens, the caches' dtype and device.
        cu_seq_new: int32 (N+1,): cumulative new-token counts, from 0 to T.

    Returns:
        int32 (N,): ``cache_seqlens`` plus each sequence's new-token count (the next ``seqused_k``).

    Raises:
        SdpaValueError / SdpaTypeError: shapes, dtypes or devices that do not fit (the message names the
            argument). A sequence growing past its block table's pages is not checked (that would need a
            host sync); its writes land in whatever page the table holds there.
    """
    _check(key_cache, value_cache, block_table, cache_seqlens, key, value, cu_seq_new)
    n = cache_seqlens.shape[0]
    page_size = key_cache.shape[1]
    counts = cu_seq_new[1:] - cu_seq_new[:-1]
    tokens = key.shape[0]
    owner = torch.repeat_interleave(torch.arange(n, device=key.device), counts.long(), output_size=tokens)
    offset_in_sequence = torch.arange(tokens, device=key.device) - cu_seq_new[:-1].long()[owner]
    position = cache_seqlens.long()[owner] + offset_in_sequence
    page = block_table.long()[owner, position // page_size]
    slot = position % page_size
    key_cache[page, slot] = key
    value_cache[page, slot] = value
    return (cache_seqlens + counts).to(torch.int32)


def _check(key_cache, value_cache, block_table, cache_seqlens, key, value, cu_seq_new) -> None:
    for name, t in (("key_cache", key_cache), ("value_cache", value_cache), ("block_table", block_table),
                    ("cache_seqlens", cache_seqlens), ("key", key), ("value", value), ("cu_seq_new", cu_seq_new)):
        if not isinstance(t, torch.Tensor):
            raise SdpaTypeError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
        if t.device != key_cache.device:
            raise SdpaValueError(f"{name} is on {t.device}, key_cache on {key_cache.device}: all must share a device")
    if key_cache.dim() != 4 or value_cache.shape != key_cache.shape:
        raise SdpaValueError("key_cache and value_cache must both have shape (total_pages, page_size, Hkv, D); got "
                             f"{tuple(key_cache.shape)} and {tuple(value_cache.shape)}")
    _, _, heads, dim = key_cache.shape
    if key.dim() != 3 or key.shape[1:] != (heads, dim) or value.shape != key.shape:
        raise SdpaValueError(f"key and value must both have shape (T, Hkv, D) = (T, {heads}, {dim}); got "
                             f"{tuple(key.shape)} and {tuple(value.shape)}")
    if key.dtype != key_cache.dtype or value.dtype != value_cache.dtype:
        raise SdpaTypeError(f"key/value dtype ({key.dtype}, {value.dtype}) must match the caches' ({key_cache.dtype})")
    for name, t, dims in (("block_table", block_table, 2), ("cache_seqlens", cache_seqlens, 1),
                          ("cu_seq_new", cu_seq_new, 1)):
        if t.dtype != torch.int32 or t.dim() != dims:
            raise SdpaValueError(f"{name} must be an int32 tensor with {dims} dimension(s); got {t.dtype} "
                                 f"{tuple(t.shape)}")
    n = cache_seqlens.shape[0]
    if block_table.shape[0] != n or cu_seq_new.shape[0] != n + 1:
        raise SdpaValueError(f"block_table must have shape (N, max_pages) and cu_seq_new (N+1,) for N = {n} "
                             f"sequences (cache_seqlens); got {tuple(block_table.shape)} and {tuple(cu_seq_new.shape)}")
