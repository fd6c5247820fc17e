"""A seeded random sweep of the GPU forward against the float64 oracle: shapes, head dims, dtypes, GQA ratios,
memory layouts, masks and dispatch policies drawn together, one test per case.

The cases are drawn once, at import, from SEED; a failing case's id and message carry everything needed to
rebuild it (``pytest tests/python/test_gpu_sweep.py -k <id>`` reruns exactly it: each case draws its
tensors from its own seed, independent of the others). Sizes are capped (B * Hq * Sq * Skv <= ELEMENTS) so
the sweep, oracle included, runs in well under a minute on an H100 host.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch
from conftest import requires_cuda
from layouts import describe, make_qkv
from oracle import assert_close, attention_fp64_masked

import sdpa_core
from sdpa_core import CausalVariant

SEED = 20250611
N_CASES = 150
ELEMENTS = 1 << 23  # cap on B * Hq * Sq * Skv

SEQ_LENS = [1, 2, 17, 64, 113, 255, 1000]
DIMS = [64, 128, 256]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
GQA_RATIOS = [1, 2, 4, 8]
LAYOUTS = ["contiguous", "bshd", "packed", "misaligned", "odd_stride", "kv_cache"]
MASKS = ["none", "is_causal", "causal_upper_left", "causal_lower_right", "alibi", "alibi_per_batch",
         "alibi_is_causal", "alibi_upper_left", "alibi_lower_right", "tensor_bool", "tensor_bool_is_causal",
         "tensor_float", "tensor_float_is_causal", "finfo_min", "finfo_min_is_causal"]
POLICIES = ["own", "auto"]


@dataclasses.dataclass(frozen=True)
class Case:
    index: int
    seed: int
    batch: int
    heads_q: int
    heads_kv: int
    seq_q: int
    seq_kv: int
    dim: int
    dtype: str
    layout: str
    mask: str
    mask_shape: tuple | None  # the TensorBias's shape (any rank 2..4, broadcast dims 1)
    scale: float | None
    policy: str

    @property
    def id(self) -> str:
        shape = "" if self.mask_shape is None else "-m" + "x".join(map(str, self.mask_shape))
        return (f"{self.index:03d}-{self.dtype}-d{self.dim}-q{self.seq_q}k{self.seq_kv}-b{self.batch}"
                f"h{self.heads_q}kv{self.heads_kv}-{self.layout}-{self.mask}{shape}-{self.policy}")

    def describe(self) -> str:
        return f"{self!r} (sweep SEED={SEED}; rerun with: pytest tests/python/test_gpu_sweep.py -k '{self.id}')"


def _mask_shape(rng: random.Random, batch, heads, seq_q, seq_kv) -> tuple:
    """A random shape broadcastable to (B, H, Sq, Skv): each of B, H, Sq full or 1 (Skv full 9 times in 10),
    leading 1s sometimes dropped (rank 2 or 3)."""
    full = (batch, heads, seq_q, seq_kv)
    shape = [n if rng.random() < 0.5 else 1 for n in full[:3]] + [seq_kv if rng.random() < 0.9 else 1]
    while len(shape) > 2 and shape[0] == 1 and rng.random() < 0.5:
        shape.pop(0)
    return tuple(shape)


def _draw_cases() -> list[Case]:
    rng = random.Random(SEED)
    cases = []
    for index in range(N_CASES):
        seq_q, seq_kv = rng.choice(SEQ_LENS), rng.choice(SEQ_LENS)
        ratio, heads_kv, batch = rng.choice(GQA_RATIOS), rng.choice([1, 2]), rng.choice([1, 2, 3])
        while batch * heads_kv * ratio * seq_q * seq_kv > ELEMENTS and (batch > 1 or heads_kv > 1):
            batch, heads_kv = (batch - 1, heads_kv) if batch > 1 else (batch, heads_kv - 1)
        mask = rng.choice(MASKS)
        heads_q = heads_kv * ratio
        mask_shape = _mask_shape(rng, batch, heads_q, seq_q, seq_kv) if mask.startswith(("tensor", "finfo")) else None
        cases.append(Case(index=index, seed=rng.randrange(1 << 31), batch=batch, heads_q=heads_q, heads_kv=heads_kv,
                          seq_q=seq_q, seq_kv=seq_kv, dim=rng.choice(DIMS), dtype=rng.choice(sorted(DTYPES)),
                          layout=rng.choice(LAYOUTS), mask=mask, mask_shape=mask_shape,
                          scale=rng.choice([None, None, None, 0.3, 0.497]), policy=rng.choice(POLICIES)))
    return cases


CASES = _draw_cases()


def _build_mask(case: Case, gen: torch.Generator, dtype):
    """(attn_mask, is_causal, oracle kwargs) for the case, drawn from ``gen`` on the CPU."""
    b, h, sq, skv = case.batch, case.heads_q, case.seq_q, case.seq_kv
    kind = case.mask
    is_causal = kind.endswith("is_causal")
    upper = "upper_left" if is_causal else None
    if kind in ("none", "is_causal"):
        return None, is_causal, {"causal": upper}
    if kind.startswith("causal_"):
        variant = CausalVariant.UPPER_LEFT if kind == "causal_upper_left" else CausalVariant.LOWER_RIGHT
        return sdpa_core.CausalBias(variant, sq, skv), False, {"causal": kind[len("causal_"):]}
    if kind.startswith("alibi"):
        if kind == "alibi_per_batch":
            slopes = (torch.rand(b, h, generator=gen) * 0.5 + 0.01).cuda()
        else:
            slopes = sdpa_core.alibi_slopes(h, device="cuda")
        variant = {"alibi_upper_left": CausalVariant.UPPER_LEFT,
                   "alibi_lower_right": CausalVariant.LOWER_RIGHT}.get(kind)
        oracle_causal = upper if variant is None else variant.name.lower()
        return sdpa_core.AlibiBias(slopes, sq, skv, causal=variant), is_causal, {"slopes": slopes,
                                                                                 "causal": oracle_causal}
    shape = case.mask_shape
    if kind.startswith("tensor_bool"):
        dense = torch.rand(shape, generator=gen) > 0.25
    else:
        dense = torch.randn(shape, generator=gen).to(dtype)
        if kind.startswith("finfo_min"):
            masked = torch.rand(shape, generator=gen) < 0.1
            if dtype == torch.float16:  # -65504 is a number, not a mask: see test_gpu_regressions._finfo_min_bias
                masked[..., 0] = False
            dense = dense.masked_fill(masked, torch.finfo(dtype).min)
    dense = dense.cuda()
    return sdpa_core.TensorBias(dense), is_causal, {"dense": dense, "causal": upper}


def _poison_allocator(nbytes):
    """Fill the caching allocator's next block with NaN so an unwritten output element shows up."""
    junk = torch.full((nbytes // 4 + 1024,), float("nan"), device="cuda")
    del junk


@requires_cuda
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_sweep_case_matches_oracle(case: Case):
    dtype = DTYPES[case.dtype]
    gen = torch.Generator().manual_seed(case.seed)
    q, k, v = make_qkv(case.batch, case.heads_q, case.heads_kv, case.seq_q, case.seq_kv, case.dim, case.layout,
                       "cuda", dtype, generator=gen)
    mask, is_causal, oracle_kwargs = _build_mask(case, gen, dtype)
    kwargs = {"attn_mask": mask, "is_causal": is_causal, "scale": case.scale,
              "enable_gqa": case.heads_q != case.heads_kv}
    context = f"{case.describe()}\n  q {describe(q)}\n  k {describe(k)}\n  v {describe(v)}"
    with sdpa_core.dispatch_policy(case.policy):
        text = sdpa_core.explain(q, k, v, **kwargs)
        # Under "own" every case here has a fused kernel; a dense mask broadcast along Skv may be refused.
        if case.policy == "own" and (case.mask_shape is None or case.mask_shape[-1] == case.seq_kv):
            path = next((line for line in text.splitlines() if line.startswith("path:")), "")
            assert path.startswith("path: fused kernel"), f"{context}\n{text}"
        _poison_allocator(q.numel() * q.element_size())
        out = sdpa_core.scaled_dot_product_attention(q, k, v, **kwargs)
    ref = attention_fp64_masked(q, k, v, scale=case.scale, **oracle_kwargs)
    try:
        assert_close(out, ref, dtype)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{context}\n{text}") from None
    dead = (ref == 0).all(dim=-1)
    if dead.any():
        got = out.detach().float().cpu()[dead]
        assert torch.equal(got, torch.zeros_like(got)), f"fully masked rows are not 0\n{context}\n{text}"


def test_sweep_covers_every_choice():
    """The drawn cases reach every value of every axis (a change of SEED or N_CASES must keep this)."""
    for axis, values in [("seq_q", SEQ_LENS), ("seq_kv", SEQ_LENS), ("dim", DIMS), ("dtype", DTYPES),
                         ("layout", LAYOUTS), ("mask", MASKS), ("policy", POLICIES)]:
        missing = set(values) - {getattr(c, axis) for c in CASES}
        assert not missing, f"no sweep case has {axis} in {sorted(missing)}"
    assert {c.heads_q // c.heads_kv for c in CASES} == set(GQA_RATIOS)
