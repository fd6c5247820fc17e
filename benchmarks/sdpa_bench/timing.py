"""Timing one row: every contender on one (case, mode), refusals included.

Time is the median of ``triton.testing.do_bench`` (which flushes L2 between repetitions; CUDA-event median
when triton is missing). A fwd row times the forward under torch.no_grad(); a fwd+bwd row times the forward
then ``out.backward(grad)``, with every ``.grad`` reset to None between repetitions (outside the timing).
The first call, which compiles FlexAttention and surfaces refusals, is never timed. A contender slower than
``slow_s`` per call is timed as the median of 3 calls instead, so one fallback cannot eat the run's budget.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
import warnings
from typing import Callable

import torch

from .cases import Case, Inputs
from .contenders import (SDPA_COLUMNS, Contender, Unsupported, condensed_path, explain,
                         grad_mode, one_line)


@dataclasses.dataclass(frozen=True)
class Options:
    warmup_ms: float = 50.0
    rep_ms: float = 200.0
    slow_s: float = 0.5  # a call slower than this is timed as the median of 3 calls
    dry_run: bool = False  # call each contender once, time nothing


@dataclasses.dataclass
class Cell:
    tflops: float | None = None
    note: str = ""  # "materialized", "eager", "3 calls"
    reason: str = ""  # why "-"
    ran: bool = False  # --dry-run: called once, not timed
    first_call_s: float | None = None  # untimed first call (FlexAttention: includes the compile)


@dataclasses.dataclass
class Row:
    case: Case
    mode: str
    cells: dict[str, Cell]
    explained: dict[str, str]  # sdpa_core column -> explain() text
    diffs: dict[str, float] = dataclasses.field(default_factory=dict)  # sdpa_core column -> max |diff|
    diff_ref: str = ""  # the column the diffs are against
    wall_s: float = 0.0

    def path(self) -> str:
        """Condensed chosen path, "auto / own: ..." when the two policies differ."""
        auto, own = (condensed_path(self.explained.get(c, "")) for c in SDPA_COLUMNS)
        return auto if own in (auto, "") or own.startswith("explain unavailable") else f"{auto} / own: {own}"


def run_row(case: Case, mode: str, t: Inputs, contenders: list[Contender], opts: Options,
            on_step: Callable[[str], None] = lambda what: None) -> Row:
    start = time.perf_counter()
    cells, outputs = {}, {}
    view = t.for_mode(mode)
    for contender in contenders:
        on_step(f"{case.name} {mode}: {contender.name}")
        cells[contender.name], out = measure(contender, case, mode, view, opts)
        if out is not None:
            outputs[contender.name] = out
        _drop_grads(t)
        if t.q.is_cuda:
            torch.cuda.empty_cache()
    explained = {c: explain(case, view, mode, p) for c, p in SDPA_COLUMNS.items() if c in cells}
    row = Row(case, mode, cells, explained)
    spot_check(row, outputs)
    row.wall_s = time.perf_counter() - start
    return row


def measure(contender: Contender, case: Case, mode: str, t: Inputs, opts: Options):
    """(Cell, forward output or None). Any exception becomes a "-" cell with its reason, never a crash."""
    # torch explains a refusal in warnings, not in its RuntimeError ("No available kernel"), so they are
    # recorded for the footnote; this also keeps compile chatter off the progress bar.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            runner = contender.build(case, t)
            if opts.dry_run and not contender.cpu:
                return Cell(reason=f"{contender.name} runs on CUDA only: built, not called by --dry-run"), None
            with runner.ctx(), grad_mode(mode):
                step, out, first_s = _first_call(runner.fn, mode, t)
                forbidden = runner.forbidden_warning
                if forbidden and any(forbidden in str(w.message) for w in caught):
                    raise Unsupported(f"warned '{forbidden}': not the kernel this column stands for")
                if opts.dry_run:
                    return Cell(note=runner.note, ran=True, first_call_s=first_s), out
                ms, note = _time(step, t, opts)
            tflops = case.flops(mode) / (ms * 1e-3) / 1e12
            return Cell(tflops, ", ".join(n for n in (runner.note, note) if n), first_call_s=first_s), out
        except Exception as e:  # noqa: BLE001 - RuntimeError, OOM, compile errors: a "-" with its reason
            return Cell(reason=_refusal_reason(e, [str(w.message) for w in caught])), None


def _first_call(fn: Callable[[], torch.Tensor], mode: str, t: Inputs):
    """Run once, untimed: compiles, surfaces refusals, gives the output and grad for the timed step."""
    start = time.perf_counter()
    out = fn()
    if mode == "fwd":
        step = fn
    else:
        dout = torch.randn_like(out)
        out.backward(dout)
        step = lambda: fn().backward(dout)
    _sync(t)
    return step, out.detach(), time.perf_counter() - start


def _time(step: Callable[[], object], t: Inputs, opts: Options) -> tuple[float, str]:
    """(median ms, note). One probe call decides between do_bench and 3 single calls."""
    leaves = t.grad_leaves()
    _drop_grads(t)
    start = time.perf_counter()
    step()
    _sync(t)
    if time.perf_counter() - start > opts.slow_s:
        return _median_ms_events(step, leaves, reps=3, warmup=0), "3 calls"
    return median_ms(step, opts.warmup_ms, opts.rep_ms, leaves), ""


def median_ms(fn: Callable[[], object], warmup_ms: float, rep_ms: float,
              grad_to_none: list[torch.Tensor]) -> float:
    """Median time of fn in ms: triton's do_bench (flushes L2 between reps), else CUDA events."""
    try:
        from triton.testing import do_bench
    except ImportError:
        return _median_ms_events(fn, grad_to_none, reps=max(5, int(rep_ms // 5)), warmup=3)
    kw = dict(warmup=warmup_ms, rep=rep_ms, grad_to_none=grad_to_none or None)
    try:
        return float(do_bench(fn, return_mode="median", **kw))
    except TypeError:  # triton before return_mode existed
        return float(do_bench(fn, quantiles=[0.5], **kw))


def _median_ms_events(fn: Callable[[], object], grad_to_none: list[torch.Tensor], reps: int,
                      warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        for x in grad_to_none:
            x.grad = None
        times.append(event_ms(fn))
    return statistics.median(times)


def event_ms(fn: Callable[[], object]) -> float:
    """One call of fn, in ms between CUDA events around it (waits for it)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def _sync(t: Inputs) -> None:
    if t.q.is_cuda:
        torch.cuda.synchronize()


def _drop_grads(t: Inputs) -> None:
    for x in t.grad_leaves():
        x.grad = None


def _refusal_reason(e: Exception, warned: list[str]) -> str:
    """The exception's first line plus torch's first warning that says why this backend refused."""
    noise = ("runtime disabled", "not used because", "without torch.compile")
    why = [w for w in warned if not any(n in w for n in noise)]
    return one_line(e) + (f" ({one_line(Exception(why[0]), bare=True)})" if why else "")


def spot_check(row: Row, outputs: dict[str, torch.Tensor]) -> None:
    """max |sdpa_core column - fastest other column| on the whole forward output: a spot check only,
    the correctness oracle is the fp64 test suite. Without timings (--dry-run): against torch default."""
    others = [(c.tflops or 0.0, name) for name, c in row.cells.items()
              if name not in SDPA_COLUMNS and name in outputs]
    if not others:
        return
    timed = [o for o in others if o[0] > 0]
    row.diff_ref = max(timed)[1] if timed else others[0][1]
    ref = outputs[row.diff_ref].float()
    for column in SDPA_COLUMNS:
        if column in outputs:
            row.diffs[column] = (outputs[column].float() - ref).abs().max().item()

