"""``sdpa_core.varlen_attn`` against an independent float64 oracle, one sequence at a time.

The oracle never sees the packed or paged tensors: each case draws every sequence's logical queries, keys
and values first, then writes them token by token into the packed tensors or a shuffled page pool whose
other slots hold NaN. The oracle computes each sequence from its logical tensors with a mask built by
loops over (i, j), so neither the implementation's gathering nor its bias objects can hide a bug.
"""

from __future__ import annotations

import math
import importlib.util
import inspect
import random

import pytest
import torch
from conftest import requires_cuda
from oracle import TOLERANCE
from torch.nn.attention import bias as torch_bias

import sdpa_core
from sdpa_core import CausalVariant

NAN = float("nan")
# (Lq, Lk used) edge cases in every batch: empty queries, empty keys, one token, Lq > Lk, Lq < Lk
EDGE_LENGTHS = [(3, 5), (0, 4), (1, 1), (6, 2), (2, 0), (1, 37), (0, 0), (17, 17)]
LAYOUTS = {  # name: (page_size or None, pass cu_seq_k, pass seqused_k, allocation longer than use)
    "packed": (None, True, False, False),
    "packed_seqused": (None, True, True, True),
    "paged16_seqused": (16, False, True, False),
    "paged64_cu": (64, True, False, False),
    "paged16_both": (16, True, True, True),
}
BIASES = {  # name: (causal variant or None, ALiBi)
    "none": (None, False),
    "upper_left": (CausalVariant.UPPER_LEFT, False),
    "lower_right": (CausalVariant.LOWER_RIGHT, False),
    "alibi": (None, True),
    "alibi_upper_left": (CausalVariant.UPPER_LEFT, True),
    "alibi_lower_right": (CausalVariant.LOWER_RIGHT, True),
}


def make_case(layout: str, heads_kv: int, group: int, dim: int, dtype, device="cpu", lengths=None, seed=0):
    """Random sequences written into the layout; returns (args, kwargs, logical) where ``logical`` is the
    per-sequence (q, k, v) the oracle reads: q (Lq, Hq, D), k and v (Lk used, Hkv, D)."""
    page_size, pass_cu, pass_used, over_allocate = LAYOUTS[layout]
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    if lengths is None:
        lengths = EDGE_LENGTHS + [(rng.randint(0, 24), rng.randint(0, 70)) for _ in range(4)]
        rng.shuffle(lengths)
    heads_q = heads_kv * group
    logical = [tuple(torch.randn(n, h, dim, generator=gen, dtype=torch.float64)
                     for n, h in ((lq, heads_q), (lk, heads_kv), (lk, heads_kv))) for lq, lk in lengths]
    # a KV-cache slot may be longer than what the sequence uses; its tail is garbage
    alloc = [lk + (rng.randint(1, 20) if over_allocate else 0) for _, lk in lengths]
    query = torch.cat([q for q, _, _ in logical]) if logical else torch.zeros(0, heads_q, dim, dtype=torch.float64)
    cu_q = [0]
    for lq, _ in lengths:
        cu_q.append(cu_q[-1] + lq)
    cu_k = [0]
    for a in alloc:
        cu_k.append(cu_k[-1] + a)
    if page_size is None:
        key = torch.full((cu_k[-1], heads_kv, dim), NAN, dtype=torch.float64)
        value = key.clone()
        for b, (_, k, v) in enumerate(logical):
            for t in range(k.shape[0]):
                key[cu_k[b] + t], value[cu_k[b] + t] = k[t], v[t]
        block_table = None
    else:
        counts = [-(-a // page_size) for a in alloc]
        spare = 3  # pages no sequence owns: NaN, never read
        order = torch.randperm(sum(counts) + spare, generator=gen).tolist()
        key = torch.full((len(order), page_size, heads_kv, dim), NAN, dtype=torch.float64)
        value = key.clone()
        table = torch.full((len(lengths), max(counts, default=0) + 2), -1, dtype=torch.int32)  # -1: stale entries
        for b, (_, k, v) in enumerate(logical):
            for p in range(counts[b]):
                table[b, p] = order.pop()
            for t in range(k.shape[0]):
                page, slot = int(table[b, t // page_size]), t % page_size
                key[page, slot], value[page, slot] = k[t], v[t]
        block_table = table.to(device)
    used = [lk for _, lk in lengths]
    args = (query.to(device, dtype), key.to(device, dtype), value.to(device, dtype),
            torch.tensor(cu_q, dtype=torch.int32, device=device),
            torch.tensor(cu_k, dtype=torch.int32, device=device) if pass_cu else None,
            max((lq for lq, _ in lengths), default=0), max(used, default=0))
    kwargs = {"enable_gqa": group > 1, "block_table": block_table,
              "seqused_k": torch.tensor(used, dtype=torch.int32, device=device) if pass_used else None}
    # the oracle reads what the kernel reads: the inputs rounded to the test dtype
    logical = [tuple(t.to(dtype).to(torch.float64) for t in seq) for seq in logical]
    return args, kwargs, logical


def oracle(logical, heads_q, dim, *, causal=None, slopes=None, scale=None):
    """float64 (Tq, Hq, D) outputs and (Tq, Hq) LSE, one sequence at a time with a mask built by loops."""
    outs = [torch.zeros(0, heads_q, dim, dtype=torch.float64)]
    lses = [torch.zeros(0, heads_q, dtype=torch.float64)]
    for q, k, v in logical:
        len_q, heads_q, dim = q.shape
        len_k, heads_kv = k.shape[0], k.shape[1]
        s = 1.0 / math.sqrt(dim) if scale is None else scale
        bias = torch.zeros(heads_q, len_q, len_k, dtype=torch.float64)
        for i in range(len_q):
            for j in range(len_k):
                if causal == CausalVariant.UPPER_LEFT and j > i:
                    bias[:, i, j] = -math.inf
                elif causal == CausalVariant.LOWER_RIGHT and j > i + (len_k - len_q):
                    bias[:, i, j] = -math.inf
                elif slopes is not None:
                    bias[:, i, j] = -slopes.double().cpu() * abs(i + (len_k - len_q) - j)
        out = torch.zeros(len_q, heads_q, dim, dtype=torch.float64)
        lse = torch.full((len_q, heads_q), -math.inf, dtype=torch.float64)
        for h in range(heads_q):
            kv_head = h // (heads_q // heads_kv)
            scores = q[:, h] @ k[:, kv_head].T * s + bias[h]
            for i in range(len_q):
                if torch.isfinite(scores[i]).any():
                    lse[i, h] = torch.logsumexp(scores[i], dim=0)
                    out[i, h] = torch.softmax(scores[i], dim=0) @ v[:, kv_head]
        outs.append(out)
        lses.append(lse)
    return torch.cat(outs), torch.cat(lses)


def check(out, lse, ref_out, ref_lse, dtype):
    assert out.shape == ref_out.shape and lse.shape == ref_lse.shape
    assert lse.dtype == torch.float32
    out64, lse64 = out.cpu().double(), lse.cpu().double()
    assert not torch.isnan(out64).any(), "NaN in the output: a garbage slot was read"
    err = (out64 - ref_out).abs().max().item() if out.numel() else 0.0
    assert err <= TOLERANCE[dtype], f"output error {err:.3g} > {TOLERANCE[dtype]:.1g} for {dtype}"
    dead = torch.isneginf(ref_lse)
    assert torch.equal(torch.isneginf(lse64), dead), "lse is -inf exactly where a row sees no key"
    assert (out64[dead] == 0).all(), "rows that see no key output zeros"
    lse_err = (lse64[~dead] - ref_lse[~dead]).abs().max().item() if (~dead).any() else 0.0
    assert lse_err <= max(TOLERANCE[dtype], 1e-5), f"lse error {lse_err:.3g}"


def run_case(layout, heads_kv, group, bias_name, dtype, device="cpu", dim=16, scale=None, seed=0, lengths=None):
    args, kwargs, logical = make_case(layout, heads_kv, group, dim, dtype, device, lengths, seed)
    causal, alibi = BIASES[bias_name]
    slopes = sdpa_core.alibi_slopes(heads_kv * group, device=device) if alibi else None
    out, lse = sdpa_core.varlen_attn(*args, **kwargs, scale=scale, causal=causal, alibi_slopes=slopes,
                                     return_lse=True)
    ref_out, ref_lse = oracle(logical, heads_kv * group, dim, causal=causal, slopes=slopes, scale=scale)
    check(out, lse, ref_out, ref_lse, dtype)
    alone = sdpa_core.varlen_attn(*args, **kwargs, scale=scale, causal=causal, alibi_slopes=slopes)
    assert torch.equal(alone, out), "return_lse changes the output"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias_name", list(BIASES))
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("group", [1, 2, 4, 8])
def test_matches_oracle(group, layout, bias_name, dtype):
    run_case(layout, heads_kv=2 if group < 8 else 1, group=group, bias_name=bias_name, dtype=dtype,
             seed=group * 7 + len(layout))


@pytest.mark.parametrize("layout", ["packed", "paged16_both"])
def test_explicit_scale_and_torch_variant(layout):
    run_case(layout, 2, 2, "alibi_lower_right", torch.float64, scale=0.3)
    args, kwargs, _ = make_case(layout, 2, 2, 16, torch.float32)
    ours = sdpa_core.varlen_attn(*args, **kwargs, causal=CausalVariant.LOWER_RIGHT)
    theirs = sdpa_core.varlen_attn(*args, **kwargs, causal=torch_bias.CausalVariant.LOWER_RIGHT)
    assert torch.equal(ours, theirs)


def test_only_empty_sequences():
    lengths = [(0, 3), (0, 0), (2, 0)]
    for layout in ("packed", "paged16_seqused"):
        run_case(layout, 2, 2, "lower_right", torch.float32, lengths=lengths)
        run_case(layout, 2, 2, "none", torch.float32, lengths=[])


@pytest.mark.parametrize("layout", ["packed_seqused", "paged16_seqused", "paged64_cu"])
@pytest.mark.parametrize("bias_name", ["none", "alibi_lower_right", "upper_left"])
def test_batch_invariant(layout, bias_name):
    """Each sequence computed alone gives bitwise the batch's rows, for every num_splits."""
    args, kwargs, logical = make_case(layout, 2, 4, 32, torch.float32, seed=3)
    query, key, value, cu_q, cu_k, _, _ = args
    causal, alibi = BIASES[bias_name]
    extra = {"causal": causal, "alibi_slopes": sdpa_core.alibi_slopes(8) if alibi else None, "return_lse": True}
    out, lse = sdpa_core.varlen_attn(*args, **kwargs, **extra)
    for splits in (1, 3):
        again = sdpa_core.varlen_attn(*args, **kwargs, **extra, num_splits=splits)
        assert torch.equal(again[0], out) and torch.equal(again[1], lse), f"num_splits={splits} changed results"
    paged = kwargs["block_table"] is not None
    for b, (q, k, _) in enumerate(logical):
        q0, q1 = int(cu_q[b]), int(cu_q[b + 1])
        one = {"enable_gqa": True, "seqused_k": None if kwargs["seqused_k"] is None else kwargs["seqused_k"][b:b + 1]}
        cu_q1 = torch.tensor([0, q1 - q0], dtype=torch.int32)
        if paged:  # the same pool, this sequence's row of the block table
            one["block_table"] = kwargs["block_table"][b:b + 1]
            k_args = (key, value, None if cu_k is None else (cu_k[b:b + 2] - cu_k[b]))
        else:
            k0, k1 = int(cu_k[b]), int(cu_k[b + 1])
            k_args = (key[k0:k1].clone(), value[k0:k1].clone(), torch.tensor([0, k1 - k0], dtype=torch.int32))
        o, l = sdpa_core.varlen_attn(query[q0:q1].clone(), k_args[0], k_args[1], cu_q1, k_args[2],
                                     q1 - q0, k.shape[0], **one, **extra)
        assert torch.equal(o, out[q0:q1]) and torch.equal(l, lse[q0:q1]), f"sequence {b} differs alone"


def test_exported_and_explain_unaffected():
    assert sdpa_core.varlen_attn is sdpa_core.varlen.varlen_attn and "varlen_attn" in sdpa_core.__all__
    q = torch.randn(1, 2, 4, 16)
    assert "path:" in sdpa_core.explain(q, q, q)


# --- bad inputs: each names the argument and what it must be -----------------------------------------------

def _valid():
    query, key, value = torch.randn(5, 4, 16), torch.randn(7, 2, 16), torch.randn(7, 2, 16)
    cu_q, cu_k = torch.tensor([0, 2, 5], dtype=torch.int32), torch.tensor([0, 3, 7], dtype=torch.int32)
    return [query, key, value, cu_q, cu_k, 3, 4], {"enable_gqa": True}


def _paged():
    args, kwargs = _valid()
    args[1], args[2] = torch.randn(4, 16, 2, 16), torch.randn(4, 16, 2, 16)
    kwargs["block_table"] = torch.tensor([[2, -1], [0, 7]], dtype=torch.int32)
    return args, kwargs


def _i32(*values):
    return torch.tensor(values, dtype=torch.int32)


def _paged_used():
    """A paged call whose lengths come from seqused_k alone (cu_seq_k None), two pages per sequence."""
    args, kwargs = _paged()
    kwargs["block_table"] = _i32(2, -1, 0, 1).view(2, 2)
    args[4] = None
    return args, kwargs


def _set(*pairs):
    """A mutation: for each (where, value), args[where] (an int) or kwargs[where] (a str) becomes value, or
    value(old) when value is a function."""
    def mutate(args, kwargs):
        for where, value in zip(pairs[0::2], pairs[1::2]):
            target = args if isinstance(where, int) else kwargs
            target[where] = value(target[where]) if callable(value) else value
    return mutate


V, T = sdpa_core.SdpaValueError, sdpa_core.SdpaTypeError
BAD = [  # (id, base call, mutation, error, message pattern)
    ("cu_seq_q int64", _valid, _set(3, lambda t: t.long()), T, r"cu_seq_q must be int32"),
    ("cu_seq_q 2-D", _valid, _set(3, lambda t: t.view(1, 3)), V, r"cu_seq_q must have shape \(N\+1,\)"),
    ("cu_seq_q empty", _valid, _set(3, _i32()), V, r"cu_seq_q must have shape \(N\+1,\)"),
    ("cu_seq_q start", _valid, _set(3, _i32(1, 2, 5)), V, r"cu_seq_q\[0\] must be 0"),
    ("cu_seq_q decreasing", _valid, _set(3, _i32(0, 4, 3, 5)), V, r"cu_seq_q must be non-decreasing"),
    ("cu_seq_q total", _valid, _set(3, _i32(0, 2, 4)), V,
     r"cu_seq_q\[-1\] \(4\) must equal the total query tokens \(5\)"),
    ("cu_seq_k total", _valid, _set(4, _i32(0, 3, 6)), V,
     r"cu_seq_k\[-1\] \(6\) must equal the total key/value tokens \(7\)"),
    ("cu_seq_k count", _valid, _set(4, _i32(0, 7)), V, r"cu_seq_k must have shape \(3,\)"),
    ("cu_seq_k None packed", _valid, _set(4, None), V, r"cu_seq_k may be None only"),
    ("cu_seq_k list", _valid, _set(4, [0, 3, 7]), T, r"cu_seq_k must be an int32 tensor"),
    ("query 4-D", _valid, _set(0, lambda t: t.unsqueeze(0)), V, r"query must have shape \(Tq, Hq, D\)"),
    ("key 4-D packed", _valid, _set(1, lambda t: t.unsqueeze(0)), V, r"key must have shape \(Tk, Hkv, D\)"),
    ("key head dim", _valid, _set(1, torch.randn(7, 2, 8), 2, torch.randn(7, 2, 8)), V,
     r"key head dim \(8\) must equal query head dim \(16\)"),
    ("value head dim", _valid, _set(2, torch.randn(7, 2, 8)), V,
     r"value head dim \(8\) must equal query head dim \(16\)"),
    ("value tokens", _valid, _set(2, torch.randn(6, 2, 16)), V, r"key and value must have the same shape"),
    ("key dtype", _valid, _set(1, lambda t: t.double()), T, r"key.dtype"),
    ("query int", _valid, _set(0, lambda t: t.int()), T, r"query must be a floating point"),
    ("gqa off", _valid, _set("enable_gqa", False), V, r"pass enable_gqa=True"),
    ("gqa ratio", _valid, _set(0, torch.randn(5, 3, 16)), V,
     r"query heads \(3\) must be a multiple of key/value heads \(2\)"),
    ("seqused_k int64", _valid, _set("seqused_k", torch.tensor([1, 2])), T, r"seqused_k must be int32"),
    ("seqused_k shape", _valid, _set("seqused_k", _i32(1, 2, 3)), V, r"seqused_k must have shape \(N,\) = \(2,\)"),
    ("seqused_k negative", _valid, _set("seqused_k", _i32(1, -1)), V, r"seqused_k\[1\] must be >= 0"),
    ("seqused_k long", _valid, _set("seqused_k", _i32(4, 1)), V,
     r"seqused_k\[0\] \(4\) exceeds the sequence's key length from cu_seq_k \(3\)"),
    ("pool 3-D", _paged, _set(1, torch.randn(7, 2, 16), 2, torch.randn(7, 2, 16)), V,
     r"key must have shape \(total_pages, page_size, Hkv, D\)"),
    ("block_table int64", _paged, _set("block_table", lambda t: t.long()), T, r"block_table must be int32"),
    ("block_table 1-D", _paged, _set("block_table", _i32(2, 0)), V, r"block_table must have shape \(N, max_pages\)"),
    ("block_table rows", _paged, _set("block_table", _i32(2).view(1, 1)), V,
     r"block_table must have shape \(N, max_pages\) = \(2, max_pages\)"),
    ("block_table page", _paged, _set("block_table", _i32(2, -1, 4, 0).view(2, 2)), V,
     r"block_table\[1, 0\] = 4 is outside the page pool \[0, 4\)"),
    ("block_table capacity", _paged_used, _set("seqused_k", _i32(1, 33)), V,
     r"sequence 1 uses 33 keys but block_table holds 2 pages of page_size 16 \(32 keys\)"),
    ("max_q small", _valid, _set(5, 2), V, r"max_q \(2\) is less than the longest query length in the batch \(3\)"),
    ("max_k small", _valid, _set(6, 3), V,
     r"max_k \(3\) is less than the longest used key length in the batch \(4\)"),
    ("max_q float", _valid, _set(5, 3.0), V, r"max_q must be a non-negative int"),
    ("num_splits 0", _valid, _set("num_splits", 0), V, r"num_splits must be None or an int >= 1"),
    ("num_splits bool", _valid, _set("num_splits", True), V, r"num_splits must be None or an int >= 1"),
    ("causal bool", _valid, _set("causal", True), T, r"causal must be None or a CausalVariant"),
    ("slopes float64", _valid, _set("alibi_slopes", torch.ones(4, dtype=torch.float64)), T,
     r"alibi_slopes must be float32 of shape \(Hq,\) = \(4,\)"),
    ("slopes per kv head", _valid, _set("alibi_slopes", torch.ones(2)), V,
     r"alibi_slopes must have shape \(Hq,\) = \(4,\)"),
    ("scale inf", _valid, _set("scale", math.inf), V, r"scale must be finite"),
    ("return_lse str", _valid, _set("return_lse", "yes"), T, r"return_lse must be a bool"),
]


@pytest.mark.parametrize("base, mutate, error, pattern", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input(base, mutate, error, pattern):
    args, kwargs = base()
    if base is _valid:  # the unmutated call is valid (the paged bases: test_paged_bases_are_valid)
        sdpa_core.varlen_attn(*args, **kwargs)
    mutate(args, kwargs)
    with pytest.raises(error, match=pattern) as info:
        sdpa_core.varlen_attn(*args, **kwargs)
    assert isinstance(info.value, RuntimeError)


def test_paged_bases_are_valid():
    for base in (_paged, _paged_used):
        args, kwargs = base()
        if base is _paged:
            kwargs["seqused_k"] = _i32(3, 4)
        else:
            kwargs["seqused_k"] = _i32(1, 30)
            args[6] = 30
        out = sdpa_core.varlen_attn(*args, **kwargs)
        assert out.shape == (5, 4, 16) and not torch.isnan(out).any()


def test_unused_block_table_entries_are_not_checked():
    """Entries past a sequence's used pages may hold anything (a server's stale or -1 entries)."""
    args, kwargs = _paged()
    kwargs["seqused_k"] = _i32(3, 4)
    kwargs["block_table"] = _i32(2, 99, 0, -5).view(2, 2)
    assert sdpa_core.varlen_attn(*args, **kwargs).shape == (5, 4, 16)


# --- the same checks in bf16 on a GPU (each sequence through the fused kernels that cover it) --------------

@requires_cuda
@pytest.mark.parametrize("dim", [64, 128], ids=lambda d: f"d{d}")
@pytest.mark.parametrize("bias_name", list(BIASES))
@pytest.mark.parametrize("layout", ["packed_seqused", "paged16_seqused", "paged64_cu", "paged16_both"])
@pytest.mark.parametrize("group", [1, 4, 8])
def test_gpu_bf16_matches_oracle(group, layout, bias_name, dim):
    run_case(layout, heads_kv=1 if group == 8 else 2, group=group, bias_name=bias_name, dtype=torch.bfloat16,
             device="cuda", dim=dim, seed=group + dim)


@requires_cuda
@pytest.mark.parametrize("layout", ["paged16_seqused", "paged16_both"])
def test_gpu_batch_invariant_bf16(layout):
    """A paged sequence computed alone from the shared pool gives bitwise the batch's rows (num_splits=1)."""
    args, kwargs, logical = make_case(layout, 2, 4, 128, torch.bfloat16, device="cuda", seed=5)
    extra = {"causal": CausalVariant.LOWER_RIGHT, "alibi_slopes": sdpa_core.alibi_slopes(8, device="cuda")}
    out = sdpa_core.varlen_attn(*args, **kwargs, **extra, num_splits=1)
    cu_q = args[3].tolist()
    for b, (q, k, _) in enumerate(logical):
        if q.shape[0] == 0:
            continue
        one = sdpa_core.varlen_attn(args[0][cu_q[b]:cu_q[b + 1]].clone(), args[1], args[2],
                                    torch.tensor([0, q.shape[0]], dtype=torch.int32, device="cuda"), None,
                                    q.shape[0], k.shape[0], enable_gqa=True, seqused_k=kwargs["seqused_k"][b:b + 1],
                                    block_table=kwargs["block_table"][b:b + 1], num_splits=1, **extra)
        assert torch.equal(one, out[cu_q[b]:cu_q[b + 1]]), f"sequence {b} differs alone"


@requires_cuda
@pytest.mark.skipif(importlib.util.find_spec("torch.nn.attention.varlen") is None,
                    reason="this torch has no torch.nn.attention.varlen")
@pytest.mark.parametrize("causal", [False, True])
def test_gpu_close_to_torch_varlen(causal):
    """Next to torch's own varlen_attn (Lq == Lk per sequence, so both causal alignments agree):
    err(ours) <= 2 * err(torch) + 1e-3 against the oracle, the fair bf16 tolerance of STYLE.md."""
    from torch.nn.attention.varlen import varlen_attn as torch_varlen

    lengths = [(n, n) for n in (1, 17, 64, 130, 5)]
    args, kwargs, logical = make_case("packed", 2, 4, 128, torch.bfloat16, device="cuda", lengths=lengths)
    variant = CausalVariant.UPPER_LEFT if causal else None
    ours = sdpa_core.varlen_attn(*args, **kwargs, causal=variant)
    # torch 2.11's varlen_attn has no enable_gqa (2.13's does): give it the key/value heads repeated then.
    params = inspect.signature(torch_varlen).parameters
    targs = list(args)
    if "enable_gqa" not in params:
        group = args[0].shape[1] // args[1].shape[1]
        targs[1], targs[2] = (t.repeat_interleave(group, 1) for t in args[1:3])
    extra = {"enable_gqa": True} if "enable_gqa" in params else {}
    if "window_size" in params:
        extra["window_size"] = (-1, 0) if causal else (-1, -1)
    else:
        extra["is_causal"] = causal
    theirs = torch_varlen(*targs, **extra)
    ref, _ = oracle(logical, 8, 128, causal=variant)
    err_ours = (ours.cpu().double() - ref).abs().max().item()
    err_torch = (theirs.cpu().double() - ref).abs().max().item()
    assert err_ours <= 2 * err_torch + 1e-3, (err_ours, err_torch)


DECODE_LENGTHS = [(1, 0), (0, 5), (1, 1), (3, 70), (16, 100), (1, 300), (5, 3), (2, 2)]  # every Lq <= 16


@pytest.fixture
def fused_calls(monkeypatch):
    """Turns the one-launch path on (varlen.ONE_LAUNCH) and records whether each varlen_attn call ran it."""
    from sdpa_core import _kernels
    from sdpa_core import varlen as varlen_module
    monkeypatch.setattr(varlen_module, "ONE_LAUNCH", True)
    calls = []
    original = _kernels.try_forward_varlen

    def spy(*args, **kwargs):
        calls.append(original(*args, **kwargs))
        return calls[-1]
    monkeypatch.setattr(_kernels, "try_forward_varlen", spy)
    return calls


@requires_cuda
@pytest.mark.parametrize("dim", [64, 128], ids=lambda d: f"d{d}")
@pytest.mark.parametrize("bias_name", list(BIASES))
@pytest.mark.parametrize("layout", ["packed_seqused", "paged16_seqused", "paged64_cu", "paged16_both"])
@pytest.mark.parametrize("group", [1, 4, 8])
def test_gpu_decode_batch_runs_in_one_launch(group, layout, bias_name, dim, fused_calls):
    """Sequences of at most 16 queries (empty ones, Lk = 0, Sq > Sk) run in one launch of the split-KV decode
    kernels, packed or paged keys read in place, and match the float64 oracle (NaN in every unused slot)."""
    run_case(layout, heads_kv=1 if group == 8 else 2, group=group, bias_name=bias_name, dtype=torch.bfloat16,
             device="cuda", dim=dim, seed=group + dim, lengths=DECODE_LENGTHS)
    assert fused_calls and all(fused_calls), "the one-launch path did not run"


PREFILL_LENGTHS = [(113, 300), (0, 5), (1, 1), (300, 17), (17, 0), (64, 200), (40, 40)]  # some Lq > 16


@requires_cuda
@pytest.mark.parametrize("dim", [64, 128, 256], ids=lambda d: f"d{d}")
@pytest.mark.parametrize("bias_name", list(BIASES))
@pytest.mark.parametrize("layout", ["packed_seqused", "paged16_seqused", "paged64_cu"])
def test_gpu_prefill_batch_runs_in_one_launch(layout, bias_name, dim, fused_calls):
    """Sequences longer than 16 queries (chunked prefill: Sq < Sk, and Sq > Sk) run in one launch of the
    prefill kernels, packed or paged keys read in place, and match the float64 oracle."""
    run_case(layout, heads_kv=2, group=2, bias_name=bias_name, dtype=torch.bfloat16, device="cuda", dim=dim,
             seed=dim, lengths=PREFILL_LENGTHS)
    assert fused_calls and all(fused_calls), "the one-launch path did not run"


@requires_cuda
@pytest.mark.parametrize("layout", ["packed_seqused", "paged16_both"])
def test_gpu_one_split_is_independent_of_the_batch(layout, fused_calls):
    """num_splits=1: each sequence's output is bitwise the same alone as in the batch."""
    args, kwargs, logical = make_case(layout, 2, 4, 128, torch.bfloat16, device="cuda", lengths=DECODE_LENGTHS,
                                      seed=3)
    query, key, value, cu_q = args[0], args[1], args[2], args[3]
    batch = sdpa_core.varlen_attn(*args, **kwargs, causal=CausalVariant.LOWER_RIGHT, num_splits=1)
    assert all(fused_calls)
    starts = cu_q.tolist()
    for b in range(len(DECODE_LENGTHS)):
        if starts[b + 1] == starts[b]:
            continue
        one = _single_sequence(args, kwargs, b)
        alone = sdpa_core.varlen_attn(*one[0], **one[1], causal=CausalVariant.LOWER_RIGHT, num_splits=1)
        assert torch.equal(alone, batch[starts[b]:starts[b + 1]]), f"sequence {b} differs alone"


def _single_sequence(args, kwargs, b):
    """varlen_attn's arguments for sequence b of a batch alone (same key/value storage)."""
    query, key, value, cu_q, cu_k, _, _ = args
    q0, q1 = cu_q[b].item(), cu_q[b + 1].item()
    as_cu = lambda n: torch.tensor([0, n], dtype=torch.int32, device=query.device)
    used = kwargs["seqused_k"][b:b + 1] if kwargs["seqused_k"] is not None else None
    length = used.item() if used is not None else (cu_k[b + 1] - cu_k[b]).item()
    if kwargs["block_table"] is not None:
        k, v = key, value
        one_cu_k = None if cu_k is None else as_cu((cu_k[b + 1] - cu_k[b]).item())
        table = kwargs["block_table"][b:b + 1]
    else:
        k0, k1 = cu_k[b].item(), cu_k[b + 1].item()
        k, v, one_cu_k, table = key[k0:k1], value[k0:k1], as_cu(k1 - k0), None
    one_args = (query[q0:q1], k, v, as_cu(q1 - q0), one_cu_k, q1 - q0, length)
    return one_args, {"enable_gqa": kwargs["enable_gqa"], "block_table": table, "seqused_k": used}


def test_explain_varlen_names_the_path_and_checks_like_varlen_attn(monkeypatch):
    """On the CPU explain_varlen says the batch runs per sequence and why; it raises varlen_attn's errors."""
    args, kwargs, _ = make_case("paged16_both", 2, 4, 16, torch.float32, lengths=[(3, 5), (0, 2), (20, 30)])
    text = sdpa_core.explain_varlen(*args, **kwargs, causal=CausalVariant.LOWER_RIGHT)
    assert "batch: 3 sequences, longest 20 queries and 30 keys; keys paged (page_size 16)" in text
    assert "causal: LOWER_RIGHT" in text
    assert "path: each sequence through scaled_dot_product_attention, because: the inputs are on cpu" in text
    from sdpa_core import varlen as varlen_module
    monkeypatch.setattr(varlen_module, "ONE_LAUNCH", False)
    assert "because: sdpa_core.varlen.ONE_LAUNCH is False" in sdpa_core.explain_varlen(*args, **kwargs)
    bad = list(args)
    bad[5] = 1  # max_q below the longest sequence
    with pytest.raises(sdpa_core.SdpaValueError, match="max_q"):
        sdpa_core.explain_varlen(*bad, **kwargs)


@requires_cuda
def test_gpu_explain_varlen_names_the_kernel():
    """explain_varlen names the kernel the one launch runs: decode for <= 16 queries, prefill beyond (the
    Hopper prefill kernel on sm90 where the build has it)."""
    compiled = sdpa_core._C.compiled_kernels()
    hopper = torch.cuda.get_device_capability() >= (9, 0) and any(k.startswith("fwd_sm90<CausalLowerRight, bfloat16, "
                                                                               "hd128>") for k in compiled)
    prefill = "fwd_sm90" if hopper else "fwd_sm80"
    for lengths, family in ((DECODE_LENGTHS, "decode_sm80"), (PREFILL_LENGTHS, prefill)):
        args, kwargs, _ = make_case("paged16_seqused", 2, 4, 128, torch.bfloat16, device="cuda", lengths=lengths)
        text = sdpa_core.explain_varlen(*args, **kwargs, causal=CausalVariant.LOWER_RIGHT)
        assert f"path: one launch of fused kernel {family}<CausalLowerRight, bfloat16, hd128>" in text, text
        if family == "decode_sm80":
            assert "keys paged (page_size 16)" in text.splitlines()[-1], text
