"""The benchmark's cases: shapes and masks fixed by the team's ANCHORS.md, their FLOPs, their inputs.

Budgets: batch x seqlen = 16384 tokens and heads x head_dim = 2048, bf16, random normal inputs. Every case
runs in the modes "fwd" (under torch.no_grad()) and "fwd+bwd" (forward, then out.backward(grad) with q, k,
v, and for the "with its gradient" case the bias, requiring grad).
"""

from __future__ import annotations

import dataclasses

import torch

import sdpa_core

TOKENS = 16384  # batch x seqlen, fixed by ANCHORS.md
HIDDEN = 2048  # heads x head_dim, fixed by ANCHORS.md
BWD_FLOP_FACTOR = 3.5  # fwd+bwd FLOPs = 3.5 x fwd (ANCHORS.md)
MODES = ("fwd", "fwd+bwd")

# What each mask kind means; `Case.mask` is one of these keys.
MASKS = {
    "none": "no mask",
    "causal": "causal, upper-left",
    "lower_right": "causal, lower-right (row i keeps keys 0 .. i + Skv - Sq)",
    "alibi_causal": "ALiBi + causal upper-left: -slope[h] * |q + Skv - Sq - kv|",
    "dense": "dense additive bias (1, H, Sq, Skv) in the query dtype",
    "dense_causal": "dense additive bias (1, H, Sq, Skv) plus causal upper-left",
}
# The masks with a causal part, and those whose inputs carry the dense (1, H, Sq, Skv) bias.
CAUSAL_MASKS = frozenset({"causal", "lower_right", "alibi_causal", "dense_causal"})
DENSE_MASKS = frozenset({"dense", "dense_causal"})


@dataclasses.dataclass(frozen=True)
class Case:
    """One case; a table row is a (case, mode) pair. B and H follow from the budgets unless overridden."""

    name: str  # slug for --cases
    label: str  # row label, worded like ANCHORS.md
    d: int
    sq: int
    skv: int
    mask: str
    bias_grad: bool = False  # dense bias requires grad (its gradient is part of fwd+bwd)
    batch_override: int | None = None  # --dry-run's tiny shapes
    heads_override: int | None = None

    @property
    def heads(self) -> int:
        return self.heads_override or HIDDEN // self.d

    @property
    def batch(self) -> int:
        # For Sq != Skv the token budget counts keys (the longer side), so the KV traffic matches
        # the square cases; the table prints B to make it visible.
        return self.batch_override or max(1, TOKENS // max(self.sq, self.skv))

    @property
    def causal_offset(self) -> int:
        """Row i of a causal mask keeps keys 0 .. i + causal_offset (lower-right: Skv - Sq)."""
        return self.skv - self.sq if self.mask == "lower_right" else 0

    def flops(self, mode: str) -> float:
        fwd = 4.0 * self.batch * self.heads * self.sq * self.skv * self.d * kept_fraction(self)
        return fwd * (BWD_FLOP_FACTOR if mode == "fwd+bwd" else 1.0)

    def shrunk(self, factor: int) -> "Case":
        """--quick: sequence lengths / factor; B grows with the token budget, so work shrinks by factor."""
        return dataclasses.replace(self, sq=self.sq // factor, skv=self.skv // factor)

    def tiny(self) -> "Case":
        """--dry-run: the same mask geometry at CPU size (longer side 128, B=1, H=2)."""
        factor = max(self.sq, self.skv) // 128
        return dataclasses.replace(self, sq=self.sq // factor, skv=self.skv // factor,
                                   batch_override=1, heads_override=2)


CASES = [
    Case("d128-s8k", "d128 S8k no mask", 128, 8192, 8192, "none"),
    Case("d128-s8k-causal", "d128 S8k causal", 128, 8192, 8192, "causal"),
    Case("d128-s16k-causal", "d128 S16k causal", 128, 16384, 16384, "causal"),
    Case("d128-s8k-alibi", "d128 S8k ALiBi+causal", 128, 8192, 8192, "alibi_causal"),
    Case("d128-q2k-kv8k-lr", "d128 Sq2k/Skv8k causal lower-right", 128, 2048, 8192, "lower_right"),
    Case("d128-s4k-bias", "d128 S4k dense bias (1,H,S,S)", 128, 4096, 4096, "dense"),
    Case("d128-s4k-bias-causal", "d128 S4k dense bias + causal", 128, 4096, 4096, "dense_causal"),
    Case("d128-s4k-bias-grad", "d128 S4k dense bias with its gradient", 128, 4096, 4096, "dense",
         bias_grad=True),
    Case("d64-s8k", "d64 S8k no mask", 64, 8192, 8192, "none"),
    Case("d64-s8k-causal", "d64 S8k causal", 64, 8192, 8192, "causal"),
    Case("d64-s8k-alibi", "d64 S8k ALiBi+causal", 64, 8192, 8192, "alibi_causal"),
    Case("d256-s8k", "d256 S8k no mask", 256, 8192, 8192, "none"),
    Case("d256-s8k-causal", "d256 S8k causal", 256, 8192, 8192, "causal"),
]
CASES_BY_NAME = {c.name: c for c in CASES}


def kept_fraction(case: Case) -> float:
    """Exact fraction of the Sq x Skv score matrix that the case's mask keeps.

    Upper-left: row i keeps keys 0..i. Lower-right: row i keeps keys 0..i + (Skv - Sq). Summed row by
    row (at most 16k rows), so Sq != Skv and clipped rows are exact; S8k causal keeps (S + 1) / 2S.
    """
    if case.mask not in CAUSAL_MASKS:
        return 1.0
    kept = sum(min(max(i + case.causal_offset + 1, 0), case.skv) for i in range(case.sq))
    return kept / (case.sq * case.skv)


@dataclasses.dataclass
class Inputs:
    """One input set per case, shared by every contender and both modes; built outside any timing."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    slopes: torch.Tensor | None = None  # (H,) float32, ALiBi cases
    bias: torch.Tensor | None = None  # (1, H, Sq, Skv) in the query dtype, dense cases
    cache: dict = dataclasses.field(default_factory=dict)  # materialized masks, Flex state

    def for_mode(self, mode: str) -> "Inputs":
        """fwd rows see detached views (same storage, no autograd at all); fwd+bwd rows the leaves."""
        if mode != "fwd":
            return self
        plain = lambda x: None if x is None else x.detach()
        return Inputs(plain(self.q), plain(self.k), plain(self.v), self.slopes, plain(self.bias), self.cache)

    def grad_leaves(self) -> list[torch.Tensor]:
        """Tensors whose .grad a fwd+bwd step fills (reset to None between repetitions)."""
        return [x for x in (self.q, self.k, self.v, self.bias) if x is not None and x.requires_grad]


def make_inputs(case: Case, device: torch.device, grad: bool, dtype=torch.bfloat16) -> Inputs:
    """q, k, v (requiring grad when a fwd+bwd mode will run; fwd runs under no_grad either way)."""
    torch.manual_seed(0)
    shape_q = (case.batch, case.heads, case.sq, case.d)
    shape_kv = (case.batch, case.heads, case.skv, case.d)
    mk = lambda shape: torch.randn(shape, device=device, dtype=dtype, requires_grad=grad)
    t = Inputs(mk(shape_q), mk(shape_kv), mk(shape_kv))
    if case.mask == "alibi_causal":
        t.slopes = sdpa_core.alibi_slopes(case.heads).to(device)
    if case.mask in DENSE_MASKS:
        t.bias = torch.randn(1, case.heads, case.sq, case.skv, device=device, dtype=dtype,
                             requires_grad=grad and case.bias_grad)
    return t


def keep_mask(case: Case, device: torch.device) -> torch.Tensor | None:
    """(Sq, Skv) bool, True = attend; None when the case has no causal part."""
    if case.mask not in CAUSAL_MASKS:
        return None
    q_idx = torch.arange(case.sq, device=device)[:, None]
    kv_idx = torch.arange(case.skv, device=device)[None, :]
    return kv_idx <= q_idx + case.causal_offset


def materialized_keep_mask(case: Case, t: Inputs) -> torch.Tensor:
    """(1, 1, Sq, Skv) bool, built once per case: the cheapest mask torch SDPA accepts."""
    if "keep" not in t.cache:
        t.cache["keep"] = keep_mask(case, t.q.device)[None, None]
    return t.cache["keep"]


def materialized_alibi(case: Case, t: Inputs) -> torch.Tensor:
    """(1, H, Sq, Skv) additive mask in the query dtype, -inf where masked; built once per case.

    One head at a time, so the fp32 intermediate is one (Sq, Skv) plane, not H of them.
    """
    if "alibi" in t.cache:
        return t.cache["alibi"]
    device = t.q.device
    q_idx = torch.arange(case.sq, device=device, dtype=torch.float32)[:, None]
    kv_idx = torch.arange(case.skv, device=device, dtype=torch.float32)[None, :]
    dist = (q_idx + (case.skv - case.sq) - kv_idx).abs()
    keep = keep_mask(case, device)
    out = torch.empty(1, case.heads, case.sq, case.skv, device=device, dtype=t.q.dtype)
    for h in range(case.heads):
        out[0, h] = (-t.slopes[h] * dist).masked_fill(~keep, float("-inf"))
    t.cache["alibi"] = out
    return out


def materialized_dense_causal(case: Case, t: Inputs) -> torch.Tensor:
    """The case's bias with -inf where the causal mask drops a key (torch SDPA takes a mask or is_causal,
    not both); built once per case."""
    if "dense_causal" not in t.cache:
        t.cache["dense_causal"] = t.bias.detach().masked_fill(~materialized_keep_mask(case, t), float("-inf"))
    return t.cache["dense_causal"]
