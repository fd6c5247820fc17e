"""Ratio targets (issue #7's proof), read off one run's table: PASS / MISS per target, never an assertion.

- Product rule, every row, fwd and fwd+bwd: sdpa_core (policy "auto") / torch default >= 0.95.
- fwd+bwd, sdpa_core's own kernels (policy "own"):
  - causal: own / torch flash >= 1.0;
  - ALiBi+causal: own / own causal at the same shape >= 0.95 (ALiBi should cost almost nothing), and
    own / torch cuDNN (materialized ALiBi) >= 1.8;
  - lower-right Sq2k/Skv8k / upper-left S8k, TFLOP/s (so per FLOP) >= 0.95;
  - dense bias with its gradient: own / torch efficient (the one torch kernel with a bias gradient) >= 1.5.

A target whose two rows were not both selected (--cases, --modes) is left out; one whose cell is "-" shows
n/a. The goals are data below: change them here, and in benchmarks/README.md.
"""

from __future__ import annotations

import dataclasses

from .cases import CASES, Case
from .contenders import CUDNN, EFFICIENT, FLASH, SDPA_CORE, SDPA_OWN, TORCH_DEFAULT
from .timing import Row

PRODUCT_GOAL = 0.95  # sdpa_core / torch default, every row
BEAT_GOAL = 1.0  # own kernel / the torch kernel it replaces
ALIBI_GOAL = 1.8  # own ALiBi / cuDNN with the bias materialized (issue #7: what not materializing buys)
BIAS_GRAD_GOAL = 1.5  # own dense bias with its gradient / torch mem-efficient with its gradient (issue #7)
FREE_GOAL = 0.95  # own kernel with a bias / own kernel without it


@dataclasses.dataclass(frozen=True)
class Target:
    label: str
    mode: str
    num: tuple[str, str]  # (case name, column)
    den: tuple[str, str]
    goal: float


@dataclasses.dataclass
class Verdict:
    target: Target
    ratio: float | None
    verdict: str  # PASS, MISS, n/a
    why: str = ""


def targets(rows: list[Row]) -> list[Target]:
    present = {(r.case.name, r.mode) for r in rows}
    out = [Target(f"sdpa_core / torch default: {r.case.label}", r.mode, (r.case.name, SDPA_CORE),
                  (r.case.name, TORCH_DEFAULT), PRODUCT_GOAL) for r in rows]
    mode = "fwd+bwd"
    for case in CASES:
        if case.mask == "causal" and case.sq == case.skv:
            out.append(Target(f"own / torch flash: {case.label}", mode, (case.name, SDPA_OWN),
                              (case.name, FLASH), BEAT_GOAL))
        elif case.mask == "alibi_causal":
            causal = _square_causal(case.d, case.skv)
            if causal:
                out.append(Target(f"own: {case.label} / {causal.label}", mode, (case.name, SDPA_OWN),
                                  (causal.name, SDPA_OWN), FREE_GOAL))
            out.append(Target(f"own / torch cuDNN materialized: {case.label}", mode, (case.name, SDPA_OWN),
                              (case.name, CUDNN), ALIBI_GOAL))
        elif case.mask == "lower_right":
            causal = _square_causal(case.d, case.skv)
            if causal:
                out.append(Target(f"own per FLOP: {case.label} / {causal.label} (upper-left)", mode,
                                  (case.name, SDPA_OWN), (causal.name, SDPA_OWN), FREE_GOAL))
        elif case.mask == "dense" and case.bias_grad:
            out.append(Target(f"own / torch efficient: {case.label}", mode, (case.name, SDPA_OWN),
                              (case.name, EFFICIENT), BIAS_GRAD_GOAL))
    return [t for t in out if (t.num[0], t.mode) in present and (t.den[0], t.mode) in present]


def _square_causal(d: int, s: int) -> Case | None:
    return next((c for c in CASES if c.mask == "causal" and c.d == d and c.sq == c.skv == s), None)


def evaluate(rows: list[Row]) -> list[Verdict]:
    cells = {(r.case.name, col, r.mode): cell for r in rows for col, cell in r.cells.items()}
    verdicts = []
    for t in targets(rows):
        num, den = cells.get((*t.num, t.mode)), cells.get((*t.den, t.mode))
        missing = [f"{col} {name} is -" for (name, col), c in ((t.num, num), (t.den, den))
                   if c is None or not c.tflops]
        if missing:
            dry = any(c is not None and c.ran for c in (num, den))
            verdicts.append(Verdict(t, None, "n/a", "dry run" if dry else "; ".join(missing)))
            continue
        ratio = num.tflops / den.tflops
        verdicts.append(Verdict(t, ratio, "PASS" if ratio >= t.goal else "MISS"))
    return verdicts


def summary_markdown(rows: list[Row]) -> str:
    verdicts = evaluate(rows)
    if not verdicts:
        return ""
    count = {v: sum(1 for x in verdicts if x.verdict == v) for v in ("PASS", "MISS", "n/a")}
    lines = [f"Ratio targets: {count['PASS']} PASS, {count['MISS']} MISS, {count['n/a']} n/a "
             "(one run, one card; a ratio, not an assertion).", "",
             "| target | mode | ratio | goal | verdict |", "|---|---|---|---|---|"]
    for v in verdicts:
        ratio = f"{v.ratio:.2f}" if v.ratio is not None else "-"
        verdict = v.verdict + (f" ({v.why})" if v.why else "")
        lines.append(f"| {v.target.label} | {v.target.mode} | {ratio} | >= {v.target.goal:.2f} | {verdict} |")
    return "\n".join(lines)
