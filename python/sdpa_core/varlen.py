"""``varlen_attn``: attention over packed variable-length sequences, optionally with a paged KV cache.

The arguments mean what they mean in ``torch.nn.attention.varlen.varlen_attn`` (torch 2.13), plus
sdpa_core's bias options. On a GPU, with ``ONE_LAUNCH`` set, a float16/bfloat16 batch runs in one launch
of libsdpa, packed or paged keys read in place: the split-KV decode kernels when every sequence has at
most 16 queries (decode, speculative decoding), the prefill kernels otherwise (prefill, chunked prefill).
Anything else (CPU, float32, gradients) runs each sequence alone through ``scaled_dot_product_attention``
with its own bias object, so every device and dtype works. ``explain_varlen()`` says which path a batch
takes and why.
"""

from __future__ import annotations

import dataclasses

import torch

from . import _dispatch, _kernel_bias, _kernels, _validate
from .bias import AlibiBias, CausalBias
from .errors import SdpaTypeError, SdpaValueError
from .functional import scaled_dot_product_attention
from .variants import CausalVariant, as_causal_variant

# The one-launch path (libsdpa's kernels over the whole batch, keys read in place). Its GPU suite
# (tests/python/test_varlen.py, tests/cpp/test_varlen_gpu.cpp) passes on the H200; False sends every batch
# through the per-sequence path, e.g. to compare the two.
ONE_LAUNCH = True


def varlen_attn(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu_seq_q: torch.Tensor,
                cu_seq_k: torch.Tensor | None, max_q: int, max_k: int, *, scale: float | None = None,
                enable_gqa: bool = False, seqused_k: torch.Tensor | None = None,
                block_table: torch.Tensor | None = None, num_splits: int | None = None,
                causal: CausalVariant | None = None, alibi_slopes: torch.Tensor | None = None,
                return_lse: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""Attention for N sequences packed along the token dimension, each attending only to its own keys.

    Shapes and meanings follow ``torch.nn.attention.varlen.varlen_attn``. Sequence b owns query rows
    ``cu_seq_q[b]:cu_seq_q[b+1]`` (Lq of them) and attends to its first Lk keys, Lk = ``seqused_k[b]``
    when given, else ``cu_seq_k[b+1] - cu_seq_k[b]``. Drawn for two sequences with lower-right causal,
    (Lq, Lk) = (2, 3) and (1, 2); rows are queries, columns the packed keys (1 = attend)::

        1 1 0 | 0 0
        1 1 1 | 0 0
        ------+----
        0 0 0 | 1 1

    Args:
        query: (Tq, Hq, D), Tq = ``cu_seq_q[-1]``.
        key, value: (Tk, Hkv, D) packed, Tk = ``cu_seq_k[-1]``; with ``block_table`` a page pool
            (total_pages, page_size, Hkv, D). Same dtype and device as ``query``; the same D (value too).
        cu_seq_q: int32 (N+1,), non-decreasing from 0 to Tq: cumulative query lengths.
        cu_seq_k: int32 (N+1,), non-decreasing from 0: cumulative key lengths (to Tk when packed). With
            ``block_table`` its differences are each sequence's key length (the pool has no packed
            offsets) and it may be None when ``seqused_k`` is given, as in torch.
        max_q, max_k: ints at least the longest query length and the longest used key length (the
            kernels size their grid from them; here they are only checked).
        scale: factor on ``query @ key^T``; default ``1 / sqrt(D)``.
        enable_gqa: required when Hq != Hkv; Hq must then be a multiple of Hkv, and query head h reads
            key/value head ``h // (Hq // Hkv)`` (torch's ``varlen_attn`` rule; SDPA's one-head broadcast
            is not implied here).
        seqused_k: int32 (N,): sequence b uses only its first ``seqused_k[b]`` keys (a KV-cache slot
            larger than the sequence). Key/value slots past it are never read into the result: they
            may hold anything, NaN included.
        block_table: int32 (N, max_pages): logical page p of sequence b is pool page
            ``block_table[b, p]``. Only the ``ceil(Lk / page_size)`` pages a sequence uses are read
            (and must be in [0, total_pages)); later entries and unused pages may hold anything. Any
            page_size is accepted, on the kernels too (they find each key row's page).
        num_splits: None or an int >= 1, torch's split-KV override: the split count of the one-launch path
            (1: a sequence's result does not depend on the batch around it; the batch then runs the prefill
            kernels even when every sequence is a decode step, which is slower). The per-sequence path
            ignores it.
        causal: None, or a ``CausalVariant`` (ours or torch's) applied per sequence: ``UPPER_LEFT``
            keeps key j for query i when j <= i; ``LOWER_RIGHT`` when j <= i + (Lk - Lq), aligning a
            sequence's last query with its last used key (decoding, chunked prefill).
        alibi_slopes: float32 (Hq,) on the query's device: adds ``-slopes[h] * |i + (Lk - Lq) - j|`` to
            the scaled scores of every sequence (i, j counted from the sequence's own start).
        return_lse: also return the log-sum-exp of each row's scaled, biased scores.

    Returns:
        out (Tq, Hq, D) in the query's dtype; with ``return_lse``, ``(out, lse)`` where lse is float32
        (Tq, Hq), torch's documented layout. A row that sees no key (Lk = 0, or masked by lower-right
        causal when Lq > Lk) outputs zeros and has lse -inf.

    Raises:
        SdpaValueError / SdpaTypeError (both RuntimeError): a bad argument; the message names it and
        the expected shape, dtype or value.

    Cost: the lengths (and the used block-table entries) are read on the host for the checks (one device
    sync). The one-launch path then reads everything in place; on the per-sequence path each sequence is
    one SDPA call, and a paged sequence's pages are gathered into a contiguous copy first. There
    ``return_lse`` computes the LSE in plain torch beside the call (float32 scores of each sequence,
    materialized; float64 for float64 inputs); the one-launch path takes it from the kernel. It carries no
    gradient.
    """
    if not isinstance(return_lse, bool):
        raise SdpaTypeError(f"return_lse must be a bool; got {type(return_lse).__name__}")
    c = _checked(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, scale, enable_gqa, seqused_k, block_table,
                 num_splits, causal, alibi_slopes)
    variant, paged, heads_q, heads_kv, dim = c.variant, c.paged, c.heads_q, c.heads_kv, c.dim
    q_starts, k_starts, used, pages = c.q_starts, c.k_starts, c.used, c.pages
    n = len(q_starts) - 1
    scale_value = c.scale
    if not _one_launch_refusal(query, key, value, alibi_slopes, c):
        fused = _fused(query, key, value, alibi_slopes, c, cu_seq_q, cu_seq_k, seqused_k, block_table, num_splits,
                       return_lse)
        if fused is not None:
            return fused
    outs, lses = [], []
    for b in range(n):
        len_q, len_k = q_starts[b + 1] - q_starts[b], used[b]
        if len_q == 0:
            continue  # no rows to write
        if len_k == 0:  # nothing to attend to: zeros, lse -inf, as for a fully masked row
            outs.append(query.new_zeros(len_q, heads_q, dim))
            lses.append(torch.full((len_q, heads_q), float("-inf"), dtype=torch.float32, device=query.device))
            continue
        q = query[q_starts[b]:q_starts[b + 1]].transpose(0, 1).unsqueeze(0)  # (1, Hq, Lq, D)
        if paged:
            k, v = (_gather_pages(t, pages[b], len_k) for t in (key, value))
        else:
            k, v = (t[k_starts[b]:k_starts[b] + len_k].transpose(0, 1).unsqueeze(0) for t in (key, value))
        bias = _sequence_bias(variant, alibi_slopes, len_q, len_k)
        out = scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale, enable_gqa=heads_q != heads_kv)
        outs.append(out[0].transpose(0, 1))
        if return_lse:
            lses.append(_lse(q, k, bias, scale_value))
    # torch.cat keeps the result differentiable where the per-sequence calls are
    out = torch.cat(outs) if outs else query.new_zeros(0, heads_q, dim)
    if not return_lse:
        return out
    lse = torch.cat(lses) if lses else torch.empty(0, heads_q, dtype=torch.float32, device=query.device)
    return out, lse


def _check_causal(causal) -> CausalVariant | None:
    if causal is None:
        return None
    try:
        return as_causal_variant(causal)
    except SdpaTypeError:
        raise SdpaTypeError(f"causal must be None or a CausalVariant (UPPER_LEFT or LOWER_RIGHT); "
                            f"got {causal!r}") from None


def _check_num_splits(num_splits) -> None:
    if num_splits is not None and (isinstance(num_splits, bool) or not isinstance(num_splits, int) or num_splits < 1):
        raise SdpaValueError(f"num_splits must be None or an int >= 1; got {num_splits!r}")


def _check_qkv(query, key, value, paged: bool, enable_gqa: bool) -> tuple[int, int, int]:
    """(Hq, Hkv, D) of inputs whose ranks, heads and head dims fit together."""
    if query.dim() != 3:
        raise SdpaValueError(f"query must have shape (Tq, Hq, D); got {tuple(query.shape)}")
    want = "(total_pages, page_size, Hkv, D) (a page pool, since block_table is given)" if paged else "(Tk, Hkv, D)"
    for name, t in (("key", key), ("value", value)):
        if t.dim() != (4 if paged else 3):
            raise SdpaValueError(f"{name} must have shape {want}; got {tuple(t.shape)}")
    if key.shape[:-1] != value.shape[:-1]:
        raise SdpaValueError(f"key and value must have the same shape up to the head dim; got key {tuple(key.shape)}, "
                             f"value {tuple(value.shape)}")
    dim = query.shape[-1]
    for name, t in (("key", key), ("value", value)):
        if t.shape[-1] != dim:
            raise SdpaValueError(f"{name} head dim ({t.shape[-1]}) must equal query head dim ({dim})")
    heads_q, heads_kv = query.shape[1], key.shape[-2]
    if heads_q != heads_kv:
        if not enable_gqa:
            raise SdpaValueError(f"query has {heads_q} heads but key/value have {heads_kv}; pass enable_gqa=True "
                                 f"for grouped-query attention")
        if heads_kv == 0 or heads_q % heads_kv != 0:
            raise SdpaValueError(f"with enable_gqa=True, query heads ({heads_q}) must be a multiple of key/value "
                                 f"heads ({heads_kv})")
    if paged and key.shape[1] == 0:
        raise SdpaValueError(f"key/value page_size must be >= 1; got key shape {tuple(key.shape)}")
    return heads_q, heads_kv, dim


def _check_index_tensor(name: str, t, query, shape_text: str, dims: int) -> None:
    if not isinstance(t, torch.Tensor):
        raise SdpaTypeError(f"{name} must be an int32 tensor of shape {shape_text}; got {type(t).__name__}")
    if t.dtype != torch.int32:
        raise SdpaTypeError(f"{name} must be int32 of shape {shape_text}; got dtype {t.dtype}")
    if t.dim() != dims:
        raise SdpaValueError(f"{name} must have shape {shape_text}; got {tuple(t.shape)}")
    if t.device != query.device:
        raise SdpaValueError(f"{name} is on {t.device} but query is on {query.device}")


@dataclasses.dataclass(frozen=True)
class _Checked:
    """varlen_attn's arguments after the checks, with the lengths read on the host."""
    variant: CausalVariant | None
    paged: bool
    heads_q: int
    heads_kv: int
    dim: int
    q_starts: list[int]
    k_starts: list[int] | None
    used: list[int]
    pages: list | None
    scale: float

    @property
    def max_q(self) -> int:
        return max((self.q_starts[b + 1] - self.q_starts[b] for b in range(len(self.q_starts) - 1)), default=0)

    @property
    def max_k(self) -> int:
        return max(self.used, default=0)


def _checked(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, scale, enable_gqa, seqused_k, block_table,
             num_splits, causal, alibi_slopes) -> _Checked:
    """Every argument check of varlen_attn (the message names the argument); reads the lengths and the used
    block-table entries on the host (one device sync)."""
    _validate.check_tensor_types(query, key, value)
    _validate.check_scalars(0.0, False, scale, enable_gqa)
    variant = _check_causal(causal)
    _check_num_splits(num_splits)
    paged = block_table is not None
    heads_q, heads_kv, dim = _check_qkv(query, key, value, paged, enable_gqa)
    q_starts = _cu_lengths("cu_seq_q", cu_seq_q, query, total=query.shape[0])
    n = len(q_starts) - 1
    k_starts, used = _key_lengths(key, query, cu_seq_k, seqused_k, block_table, n, paged)
    _check_max("max_q", max_q, [q_starts[b + 1] - q_starts[b] for b in range(n)], "query length")
    _check_max("max_k", max_k, used, "used key length")
    if alibi_slopes is not None:
        _check_slopes(alibi_slopes, query, heads_q)
    pages = _used_pages(block_table, used, key) if paged else None
    return _Checked(variant, paged, heads_q, heads_kv, dim, q_starts, k_starts, used, pages,
                    _dispatch.default_scale(query, scale))


def _one_launch_refusal(query, key, value, slopes, c: _Checked) -> str:
    """Why the batch cannot be one launch of libsdpa, or "" when it may (the kernels then have the last
    word: a build without the head dim, say)."""
    if not ONE_LAUNCH:
        return "sdpa_core.varlen.ONE_LAUNCH is False"
    if not query.is_cuda:
        return f"the inputs are on {query.device}, not a CUDA device"
    if query.dtype not in (torch.float16, torch.bfloat16):
        return f"the kernels take float16 and bfloat16, not {query.dtype}"
    if c.max_q == 0 or c.max_k == 0:
        return "no sequence has both a query and a key (the outputs are zeros)"
    if (slopes is not None and slopes.requires_grad
            or torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))):
        return "a gradient is needed and the kernels' backward takes (B, H, S, D) batches only"
    if not all(_kernels.is_aligned(t) for t in (query, key, value)):
        return "query/key/value rows are not 16-byte aligned"
    return ""


def _bias_for_kernels(slopes, variant):
    return (_kernel_bias.KernelBias.alibi(slopes, variant) if slopes is not None
            else _kernel_bias.KernelBias.causal_only(variant))


def _fused(query, key, value, slopes, c: _Checked, cu_seq_q, cu_seq_k, seqused_k, block_table, num_splits,
           return_lse: bool):
    """The whole batch in one launch of libsdpa (split-KV decode kernels up to 16 queries per sequence,
    prefill kernels beyond), or None when no compiled kernel takes it."""
    out = torch.empty_like(query)
    lse = torch.empty(query.shape[:2], dtype=torch.float32, device=query.device) if return_lse else None
    ran = _kernels.try_forward_varlen(query, key, value, _bias_for_kernels(slopes, c.variant), c.scale, cu_seq_q,
                                      cu_seq_k, seqused_k, block_table, c.max_q, c.max_k, num_splits or 0, out, lse)
    if not ran:
        return None
    return (out, lse) if return_lse else out


def explain_varlen(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu_seq_q: torch.Tensor,
                   cu_seq_k: torch.Tensor | None, max_q: int, max_k: int, *, scale: float | None = None,
                   enable_gqa: bool = False, seqused_k: torch.Tensor | None = None,
                   block_table: torch.Tensor | None = None, num_splits: int | None = None,
                   causal: CausalVariant | None = None, alibi_slopes: torch.Tensor | None = None) -> str:
    """What ``varlen_attn`` does with these arguments, without running it: one launch of which libsdpa
    kernel and what that kernel does for the batch (split count, packing, paged or packed keys), or the
    per-sequence path and why. Runs varlen_attn's argument checks (the same exceptions; one device sync)."""
    c = _checked(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, scale, enable_gqa, seqused_k, block_table,
                 num_splits, causal, alibi_slopes)
    keys = f"paged (page_size {key.shape[1]})" if c.paged else "packed"
    lines = [f"batch: {len(c.q_starts) - 1} sequences, longest {c.max_q} queries and {c.max_k} keys; keys {keys}; "
             f"causal: {c.variant.name if c.variant else 'none'}; ALiBi: {'yes' if alibi_slopes is not None else 'no'}"]
    reason = _one_launch_refusal(query, key, value, alibi_slopes, c)
    if not reason:
        kernel, reason, details = _kernels.select_varlen(
            query, key, value, _bias_for_kernels(alibi_slopes, c.variant), c.scale, cu_seq_q, cu_seq_k, seqused_k,
            block_table, c.max_q, c.max_k, num_splits or 0)
        if kernel:
            lines.append(f"path: one launch of fused kernel {kernel}")
            if details:
                lines.append(f"note: {details}")
            return "\n".join(lines)
    lines.append(f"path: each sequence through scaled_dot_product_attention, because: {reason}")
    return "\n".join(lines)


def _cu_lengths(name: str, cu, query, total: int | None) -> list[int]:
    """``cu`` as a host list, checked: int32 (N+1,), starts at 0, non-decreasing, ends at ``total``."""
    _check_index_tensor(name, cu, query, "(N+1,)", 1)
    if cu.shape[0] == 0:
        raise SdpaValueError(f"{name} must have shape (N+1,) with N >= 0 sequences; got an empty tensor")
    values = cu.tolist()
    if values[0] != 0:
        raise SdpaValueError(f"{name}[0] must be 0; got {values[0]}")
    for b in range(len(values) - 1):
        if values[b + 1] < values[b]:
            raise SdpaValueError(f"{name} must be non-decreasing (cumulative lengths); {name}[{b + 1}] = "
                                 f"{values[b + 1]} < {name}[{b}] = {values[b]}")
    if total is not None and values[-1] != total:
        what = "query" if name == "cu_seq_q" else "key/value"
        raise SdpaValueError(f"{name}[-1] ({values[-1]}) must equal the total {what} tokens ({total})")
    return values


def _key_lengths(key, query, cu_seq_k, seqused_k, block_table, n: int, paged: bool):
    """(packed key offsets or None, used key length of each sequence), every length checked against
    what the key tensor or the block table can hold."""
    if cu_seq_k is None and not (paged and seqused_k is not None):
        raise SdpaValueError("cu_seq_k may be None only with block_table and seqused_k (a paged cache whose "
                             "lengths seqused_k gives); pass int32 (N+1,) cumulative key lengths")
    starts = None
    if cu_seq_k is not None:
        starts = _cu_lengths("cu_seq_k", cu_seq_k, query, None if paged else key.shape[0])
        if len(starts) != n + 1:
            raise SdpaValueError(f"cu_seq_k must have shape ({n + 1},) like cu_seq_q; got {tuple(cu_seq_k.shape)}")
        used = [starts[b + 1] - starts[b] for b in range(n)]
    if seqused_k is not None:
        _check_index_tensor("seqused_k", seqused_k, query, f"(N,) = ({n},)", 1)
        if seqused_k.shape[0] != n:
            raise SdpaValueError(f"seqused_k must have shape (N,) = ({n},); got {tuple(seqused_k.shape)}")
        limits = used if starts is not None else None
        used = seqused_k.tolist()
        for b, u in enumerate(used):
            if u < 0:
                raise SdpaValueError(f"seqused_k[{b}] must be >= 0; got {u}")
            if limits is not None and u > limits[b]:
                raise SdpaValueError(f"seqused_k[{b}] ({u}) exceeds the sequence's key length from cu_seq_k "
                                     f"({limits[b]})")
    if paged:
        _check_index_tensor("block_table", block_table, query, f"(N, max_pages) = ({n}, max_pages)", 2)
        if block_table.shape[0] != n:
            raise SdpaValueError(f"block_table must have shape (N, max_pages) = ({n}, max_pages); got "
                                 f"{tuple(block_table.shape)}")
        capacity = block_table.shape[1] * key.shape[1]
        for b, u in enumerate(used):
            if u > capacity:
                raise SdpaValueError(f"sequence {b} uses {u} keys but block_table holds {block_table.shape[1]} pages "
                                     f"of page_size {key.shape[1]} ({capacity} keys)")
    return starts, used


def _check_max(name: str, value, lengths: list[int], what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SdpaValueError(f"{name} must be a non-negative int; got {value!r}")
    longest = max(lengths, default=0)
    if value < longest:
        raise SdpaValueError(f"{name} ({value}) is less than the longest {what} in the batch ({longest})")


def _check_slopes(slopes, query, heads_q: int) -> None:
    if not isinstance(slopes, torch.Tensor):
        raise SdpaTypeError(f"alibi_slopes must be a float32 tensor of shape (Hq,) = ({heads_q},); got "
                            f"{type(slopes).__name__}")
    if slopes.dtype != torch.float32:
        raise SdpaTypeError(f"alibi_slopes must be float32 of shape (Hq,) = ({heads_q},); got dtype {slopes.dtype}")
    if tuple(slopes.shape) != (heads_q,):
        raise SdpaValueError(f"alibi_slopes must have shape (Hq,) = ({heads_q},); got {tuple(slopes.shape)}")
    if slopes.device != query.device:
        raise SdpaValueError(f"alibi_slopes is on {slopes.device} but query is on {query.device}")


def _used_pages(block_table, used: list[int], key) -> list[torch.Tensor]:
    """Per sequence, the int64 pool indices of the pages it uses, after checking them on the host; entries
    past them are never looked at (servers leave stale or -1 entries there)."""
    page_size, total_pages = key.shape[1], key.shape[0]
    host = block_table.tolist()
    pages = []
    for b, u in enumerate(used):
        count = -(-u // page_size)
        for p, page in enumerate(host[b][:count]):
            if not 0 <= page < total_pages:
                raise SdpaValueError(f"block_table[{b}, {p}] = {page} is outside the page pool [0, {total_pages}) "
                                     f"(sequence {b} uses {count} pages for {u} keys)")
        pages.append(block_table[b, :count].to(torch.long))
    return pages


def _gather_pages(pool: torch.Tensor, pages: torch.Tensor, length: int) -> torch.Tensor:
    """(1, Hkv, length, D): a sequence's keys (or values) from its pages. Only its own pages are read;
    the slots of its last page past ``length`` are copied but sliced off before any arithmetic."""
    _, page_size, heads, dim = pool.shape
    tokens = pool.index_select(0, pages).reshape(pages.shape[0] * page_size, heads, dim)[:length]
    return tokens.transpose(0, 1).unsqueeze(0)


def _sequence_bias(variant: CausalVariant | None, slopes, len_q: int, len_k: int):
    """The bias object of one sequence: it carries its own lengths, so lower-right causal and ALiBi
    align to that sequence's last query and last used key."""
    if slopes is not None:
        return AlibiBias(slopes, len_q, len_k, causal=variant)
    if variant is not None:
        return CausalBias(variant, len_q, len_k)
    return None


@torch.no_grad()
def _lse(q: torch.Tensor, k: torch.Tensor, bias, scale: float) -> torch.Tensor:
    """float32 (Lq, Hq): logsumexp over keys of the scaled, biased scores of one sequence, in plain torch
    (float32 math, float64 for float64 inputs). A fully masked row gives -inf (logsumexp of all -inf)."""
    wide = torch.float64 if q.dtype == torch.float64 else torch.float32
    k = k.to(wide).repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    scores = (q.to(wide) @ k.transpose(-1, -2)) * scale
    if bias is not None:
        mask = bias.materialize(q.device)
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.to(wide)
    return torch.logsumexp(scores, dim=-1)[0].transpose(0, 1).to(torch.float32)
