"""Side-by-side attention benchmark: sdpa_core next to PyTorch's own kernels.

    python -m sdpa_core.bench [--cases NAME,...] [--quick] [--png PATH] [--md PATH]

Runs every case through sdpa_core, torch SDPA pinned to each backend (flash, cuDNN,
mem-efficient) and compiled FlexAttention, in one process on one GPU, and prints a
Markdown table of TFLOP/s. Shapes and FLOP counting follow the project's anchors
(batch x seqlen = 16384 tokens, heads x head_dim = 2048, bf16, random normal inputs;
forward FLOPs = 4*B*H*Sq*Skv*D times the exact fraction of the score matrix a causal
mask keeps; forward+backward = 3.5 x forward; median of triton.testing.do_bench).

Exit status: 0 on success, 2 when there is no CUDA device ("no CUDA device"), so a CI
step that expects numbers fails loudly instead of passing with an empty table.

Every input tensor is >= 64 MiB, larger than the H100's 50 MiB L2, and do_bench also
flushes L2 between repetitions, so a single input set per case does not flatter anyone.
Bias objects, block masks and materialized masks are built once per case, outside the
timed region, for every contender alike.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

# `python -m sdpa_core.bench` has imported the package before this module runs, so a broken
# sdpa_core stops the run at once; there is no half-working mode to guard against here.
import sdpa_core

TOKENS = 16384  # batch x seqlen, fixed by ANCHORS.md
HIDDEN = 2048  # heads x head_dim, fixed by ANCHORS.md
BWD_FLOP_FACTOR = 3.5  # fwd+bwd FLOPs = 3.5 x fwd (ANCHORS.md)

SDPA_CORE = "sdpa_core"
COLUMNS = [SDPA_CORE, "torch flash", "torch cuDNN", "torch efficient", "FlexAttention"]


# --------------------------------------------------------------------------- cases


@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmark row; B and H follow from the fixed token and hidden budgets.

    mask: "none", "causal" (upper-left), "lower_right", "alibi_causal" (upper-left) or "dense".
    """

    name: str  # short slug for --cases
    label: str  # row label in the table, worded like ANCHORS.md
    d: int
    sq: int
    skv: int
    mask: str
    mode: str = "fwd"  # "fwd" or "fwd+bwd"

    @property
    def heads(self) -> int:
        return HIDDEN // self.d

    @property
    def batch(self) -> int:
        # For Sq != Skv the token budget counts keys (the longer side), so the KV cache
        # and memory traffic match the square cases; the table prints B to make it visible.
        return max(1, TOKENS // max(self.sq, self.skv))

    def flops(self) -> float:
        fwd = 4.0 * self.batch * self.heads * self.sq * self.skv * self.d * kept_fraction(self)
        return fwd * (BWD_FLOP_FACTOR if self.mode == "fwd+bwd" else 1.0)

    def shrunk(self, factor: int) -> "Case":
        """Smaller copy for --quick: sequence lengths / factor (B grows with the token budget,
        so the work shrinks by `factor` and compile + run time with it)."""
        return dataclasses.replace(self, sq=self.sq // factor, skv=self.skv // factor)


FWD_CASES = [
    Case("d128-s8k", "d128 S8k no mask", 128, 8192, 8192, "none"),
    Case("d128-s8k-causal", "d128 S8k causal", 128, 8192, 8192, "causal"),
    Case("d128-s16k-causal", "d128 S16k causal", 128, 16384, 16384, "causal"),
    Case("d128-s8k-alibi", "d128 S8k ALiBi+causal", 128, 8192, 8192, "alibi_causal"),
    Case("d128-q2k-kv8k-lr", "d128 Sq2k/Skv8k causal lower-right", 128, 2048, 8192, "lower_right"),
    Case("d128-s4k-bias", "d128 S4k dense bias (1,H,S,S)", 128, 4096, 4096, "dense"),
    Case("d64-s8k-causal", "d64 S8k causal", 64, 8192, 8192, "causal"),
    Case("d64-s8k-alibi", "d64 S8k ALiBi+causal", 64, 8192, 8192, "alibi_causal"),
]
# The anchors' fwd+bwd rows. Off by default (--bwd) until sdpa_core has a fused backward;
# the timing path already handles them (see _make_step).
BWD_CASES = [
    dataclasses.replace(c, name=c.name + "-bwd", mode="fwd+bwd")
    for c in FWD_CASES
    if c.name in ("d128-s8k", "d128-s8k-causal", "d128-s8k-alibi", "d128-s4k-bias")
]


def kept_fraction(case: Case) -> float:
    """Exact fraction of the Sq x Skv score matrix that the case's mask keeps.

    Upper-left: row i keeps keys 0..i. Lower-right: row i keeps keys 0..i + (Skv - Sq).
    Summed row by row (at most 16k rows) so Sq != Skv and clipped rows are exact.
    """
    if case.mask in ("none", "dense"):
        return 1.0
    offset = case.skv - case.sq if case.mask == "lower_right" else 0
    kept = sum(min(max(i + offset + 1, 0), case.skv) for i in range(case.sq))
    return kept / (case.sq * case.skv)


# --------------------------------------------------------------------------- inputs


@dataclasses.dataclass
class Inputs:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    slopes: torch.Tensor | None = None  # (H,) float32 on device, ALiBi cases
    bias: torch.Tensor | None = None  # (1, H, Sq, Skv) bf16, dense-bias cases


def make_inputs(case: Case, device: torch.device) -> Inputs:
    torch.manual_seed(0)
    grad = case.mode == "fwd+bwd"
    shape_q = (case.batch, case.heads, case.sq, case.d)
    shape_kv = (case.batch, case.heads, case.skv, case.d)
    mk = lambda s: torch.randn(s, device=device, dtype=torch.bfloat16, requires_grad=grad)
    t = Inputs(mk(shape_q), mk(shape_kv), mk(shape_kv))
    if case.mask == "alibi_causal":
        t.slopes = sdpa_core.alibi_slopes(case.heads).to(device)
    if case.mask == "dense":
        t.bias = torch.randn(1, case.heads, case.sq, case.skv, device=device, dtype=torch.bfloat16)
    return t


def keep_mask(case: Case, device: torch.device) -> torch.Tensor | None:
    """(Sq, Skv) bool, True = attend. None when the case has no causal part."""
    if case.mask not in ("causal", "lower_right", "alibi_causal"):
        return None
    offset = case.skv - case.sq if case.mask == "lower_right" else 0
    q_idx = torch.arange(case.sq, device=device)[:, None]
    kv_idx = torch.arange(case.skv, device=device)[None, :]
    return kv_idx <= q_idx + offset


def materialize_alibi(case: Case, slopes: torch.Tensor) -> torch.Tensor:
    """(1, H, Sq, Skv) bf16 additive mask: -slope[h]*|q + Skv - Sq - kv|, -inf where masked.

    Built one head at a time so the fp32 intermediate is one (Sq, Skv) plane, not H of them.
    """
    device = slopes.device
    q_idx = torch.arange(case.sq, device=device, dtype=torch.float32)[:, None]
    kv_idx = torch.arange(case.skv, device=device, dtype=torch.float32)[None, :]
    dist = (q_idx + (case.skv - case.sq) - kv_idx).abs()
    keep = keep_mask(case, device)
    out = torch.empty(1, case.heads, case.sq, case.skv, device=device, dtype=torch.bfloat16)
    for h in range(case.heads):
        out[0, h] = (-slopes[h] * dist).masked_fill(~keep, float("-inf"))
    return out


# --------------------------------------------------------------------------- contenders


@dataclasses.dataclass
class Runner:
    fn: Callable[[], torch.Tensor]  # one forward call
    note: str = ""  # e.g. "materialized", shown next to the number
    ctx: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext


def build_sdpa_core(case: Case, t: Inputs) -> Runner:
    mask, causal = sdpa_core_mask(case, t)
    return Runner(lambda: sdpa_core.scaled_dot_product_attention(
        t.q, t.k, t.v, attn_mask=mask, is_causal=causal))


def sdpa_core_mask(case: Case, t: Inputs):
    """The (attn_mask, is_causal) a user would pass to sdpa_core for this case."""
    if case.mask == "none":
        return None, False
    if case.mask == "causal":
        if case.sq == case.skv:
            return None, True  # the spelling torch users already write
        return sdpa_core.causal_upper_left(case.sq, case.skv), False
    if case.mask == "lower_right":
        return sdpa_core.causal_lower_right(case.sq, case.skv), False
    if case.mask == "alibi_causal":
        return sdpa_core.AlibiBias(t.slopes, case.sq, case.skv,
                                   causal=sdpa_core.CausalVariant.UPPER_LEFT), False
    if case.mask == "dense":
        return sdpa_core.TensorBias(t.bias), False
    raise ValueError(case.mask)


def explain_sdpa_core(case: Case, t: Inputs) -> str:
    """sdpa_core.explain for the case, or why it could not be asked."""
    try:
        mask, causal = sdpa_core_mask(case, t)
        return str(sdpa_core.explain(t.q, t.k, t.v, attn_mask=mask, is_causal=causal)).strip()
    except Exception as e:  # noqa: BLE001 - explain is informational, never fatal
        return f"explain unavailable: {type(e).__name__}: {e}"


# Which torch backends run lower-right causal natively through CausalBias. CausalBias
# dispatch tries flash, then mem-efficient, honouring sdpa_kernel's enable flags; cuDNN
# has no path there, so it gets the materialized mask.
_NATIVE_LOWER_RIGHT = {"torch flash", "torch efficient"}


def build_torch(column: str, backend) -> Callable[[Case, Inputs], Runner]:
    from torch.nn.attention import sdpa_kernel

    def build(case: Case, t: Inputs) -> Runner:
        mask, causal, note = torch_mask(column, case, t)
        fn = lambda: F.scaled_dot_product_attention(t.q, t.k, t.v, attn_mask=mask, is_causal=causal)
        return Runner(fn, note, ctx=lambda: sdpa_kernel(backend))

    return build


def torch_mask(column: str, case: Case, t: Inputs):
    """(attn_mask, is_causal, note) for torch SDPA; masks it cannot express are materialized."""
    if case.mask == "none":
        return None, False, ""
    if case.mask == "causal" and case.sq == case.skv:
        return None, True, ""
    if case.mask == "lower_right" and column in _NATIVE_LOWER_RIGHT:
        from torch.nn.attention.bias import causal_lower_right

        return causal_lower_right(case.sq, case.skv), False, ""
    if case.mask in ("causal", "lower_right"):
        # Bool mask with a broadcast head dim: the cheapest mask torch accepts.
        return keep_mask(case, t.q.device)[None, None], False, "materialized"
    if case.mask == "alibi_causal":
        return materialize_alibi(case, t.slopes), False, "materialized"
    if case.mask == "dense":
        return t.bias, False, ""  # the bias is already a tensor: nothing to materialize
    raise ValueError(case.mask)


def build_flex(case: Case, t: Inputs) -> Runner:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    # Compiled code is cached per code object across torch.compile wrappers, so eight
    # cases would hit dynamo's recompile limit and silently fall back to eager flex
    # (which materializes scores). Resetting gives each case its own fresh compile.
    torch._dynamo.reset()
    compiled = torch.compile(flex_attention, dynamic=False)
    offset = case.skv - case.sq
    block_mask = None
    if case.mask in ("causal", "alibi_causal"):
        block_mask = create_block_mask(lambda b, h, qi, ki: qi >= ki, None, None,
                                       case.sq, case.skv, device=t.q.device)
    elif case.mask == "lower_right":
        block_mask = create_block_mask(lambda b, h, qi, ki: qi + offset >= ki, None, None,
                                       case.sq, case.skv, device=t.q.device)
    score_mod = None
    if case.mask == "alibi_causal":
        slopes = t.slopes
        score_mod = lambda s, b, h, qi, ki: s - slopes[h] * (qi + offset - ki).abs()
    elif case.mask == "dense":
        bias = t.bias
        score_mod = lambda s, b, h, qi, ki: s + bias[0, h, qi, ki]
    return Runner(lambda: compiled(t.q, t.k, t.v, score_mod=score_mod, block_mask=block_mask))


def contenders() -> dict[str, Callable[[Case, Inputs], Runner]]:
    from torch.nn.attention import SDPBackend

    return {
        SDPA_CORE: build_sdpa_core,
        "torch flash": build_torch("torch flash", SDPBackend.FLASH_ATTENTION),
        "torch cuDNN": build_torch("torch cuDNN", SDPBackend.CUDNN_ATTENTION),
        "torch efficient": build_torch("torch efficient", SDPBackend.EFFICIENT_ATTENTION),
        "FlexAttention": build_flex,
    }


# --------------------------------------------------------------------------- timing


def median_ms(fn: Callable[[], object], quick: bool) -> float:
    """Median time of fn in ms: triton's do_bench (flushes L2 between reps), else CUDA events."""
    warmup, rep = (10, 30) if quick else (100, 500)
    try:
        from triton.testing import do_bench
    except ImportError:
        return _median_ms_events(fn, reps=5 if quick else 50)
    try:
        return float(do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))
    except TypeError:  # triton before return_mode existed
        return float(do_bench(fn, warmup=warmup, rep=rep, quantiles=[0.5]))


def _median_ms_events(fn: Callable[[], object], reps: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _make_step(runner: Runner, case: Case, t: Inputs, out: torch.Tensor) -> Callable[[], object]:
    """The timed callable: forward, or forward + backward for fwd+bwd cases."""
    if case.mode == "fwd":
        return runner.fn
    dout = torch.randn_like(out)
    # autograd.grad instead of backward(): nothing accumulates into .grad between reps.
    return lambda: torch.autograd.grad(runner.fn(), (t.q, t.k, t.v), dout)


@dataclasses.dataclass
class Cell:
    tflops: float | None = None
    note: str = ""  # "materialized" etc.
    reason: str = ""  # why n/a


@dataclasses.dataclass
class Row:
    case: Case
    cells: dict[str, Cell]
    explain: str = ""
    max_diff: float | None = None
    diff_ref: str = ""


def run_case(case: Case, quick: bool, progress, device: torch.device) -> Row:
    t = make_inputs(case, device)
    cells, outputs = {}, {}
    for column, build in contenders().items():
        progress.set(f"{case.name}: {column}")
        cells[column], out = run_contender(build, case, t, quick)
        if out is not None:
            outputs[column] = out
        progress.step()
        torch.cuda.empty_cache()  # drop materialized masks before the next contender
    row = Row(case, cells, explain=explain_sdpa_core(case, t))
    spot_check(row, outputs)
    return row


def run_contender(build, case: Case, t: Inputs, quick: bool) -> tuple[Cell, torch.Tensor | None]:
    """Time one contender on one case; any refusal becomes an n/a cell with its reason."""
    # torch explains a refusal in warnings, not in the RuntimeError ("No available kernel"),
    # so they are caught for the footnote; this also keeps compile chatter off the bar.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            runner = build(case, t)
            with runner.ctx():
                # First call outside timing: compiles Flex, and a refusal surfaces here.
                with torch.no_grad() if case.mode == "fwd" else contextlib.nullcontext():
                    out = runner.fn()
                ms = median_ms(_make_step(runner, case, t, out), quick)
            return Cell(case.flops() / (ms * 1e-3) / 1e12, runner.note), out.detach()
        except Exception as e:  # noqa: BLE001 - RuntimeError, OOM, compile errors: never crash
            return Cell(reason=_refusal_reason(e, [str(w.message) for w in caught])), None


def _refusal_reason(e: Exception, warned: list[str]) -> str:
    """The exception's first line plus torch's first reason that is about this backend."""
    noise = ("runtime disabled", "not used because")
    why = [w for w in warned if not any(n in w for n in noise)]
    return _one_line(e) + (f" ({_one_line(Exception(why[0]), bare=True)})" if why else "")


def _one_line(e: Exception, bare: bool = False) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    first = lines[0] if lines else ""
    text = first if bare else f"{type(e).__name__}: {first}"
    return text if len(text) <= 160 else text[:157] + "..."


def spot_check(row: Row, outputs: dict[str, torch.Tensor]) -> None:
    """max |sdpa_core - fastest other| on the full output: cheap, one reduction per case."""
    mine = outputs.get(SDPA_CORE)
    others = [(c.tflops, name) for name, c in row.cells.items()
              if name != SDPA_CORE and c.tflops is not None and name in outputs]
    if mine is None or not others:
        return
    _, ref = max(others)
    row.diff_ref = ref
    row.max_diff = (mine.float() - outputs[ref].float()).abs().max().item()


# --------------------------------------------------------------------------- extras


def host_overhead(quick: bool) -> list[tuple[str, float | None]]:
    """Median CPU time per call at 1x1x16x64, no sync in the loop (launch cost, not GPU time)."""
    q = torch.randn(1, 1, 16, 64, device="cuda", dtype=torch.bfloat16)
    calls = [
        ("torch SDPA, no mask", lambda: F.scaled_dot_product_attention(q, q, q)),
        ("torch SDPA, is_causal", lambda: F.scaled_dot_product_attention(q, q, q, is_causal=True)),
    ]
    alibi = sdpa_core.AlibiBias(sdpa_core.alibi_slopes(1).cuda(), 16, 16,
                                causal=sdpa_core.CausalVariant.UPPER_LEFT)
    sdpa = sdpa_core.scaled_dot_product_attention
    calls += [
        ("sdpa_core, no mask", lambda: sdpa(q, q, q)),
        ("sdpa_core, is_causal", lambda: sdpa(q, q, q, is_causal=True)),
        ("sdpa_core, AlibiBias causal", lambda: sdpa(q, q, q, attn_mask=alibi)),
    ]
    n = 200 if quick else 2000
    return [(name, _cpu_us_per_call(fn, n)) for name, fn in calls]


def _cpu_us_per_call(fn: Callable[[], object], n: int) -> float | None:
    """Host time of one call: short timed bursts with the GPU drained in between, so a full launch queue
    never makes a call wait on the GPU (that would time the kernel, not the host)."""
    burst = 20
    try:
        with torch.no_grad():
            for _ in range(burst):
                fn()
            torch.cuda.synchronize()
            per_call = []
            for _ in range(max(1, n // burst)):
                t0 = time.perf_counter_ns()
                for _ in range(burst):
                    fn()
                per_call.append((time.perf_counter_ns() - t0) / burst)
                torch.cuda.synchronize()
        return statistics.median(per_call) / 1e3
    except Exception:  # noqa: BLE001 - a refused call just shows n/a
        return None


def peak_memory(quick: bool) -> list[dict]:
    """Peak extra GPU memory of one sdpa_core call (B=1, H=16, D=128) vs its tensors' bytes.

    If the fused path held an S x S score matrix anywhere, "peak above inputs" would be
    at least the S x S column; it should be close to the output size instead.
    """
    s = 4096 if quick else 16384
    cases = [
        Case("mem-causal", f"causal S={s}", 128, s, s, "causal"),
        Case("mem-alibi", f"ALiBi+causal S={s}", 128, s, s, "alibi_causal"),
        Case("mem-lr", f"causal lower-right Sq={s // 4} Skv={s}", 128, s // 4, s, "lower_right"),
    ]
    rows = []
    for case in cases:
        t = make_inputs(case, torch.device("cuda"))
        # The budgets give B=1, H=16 at Skv=16k; --quick's Skv=4k gives B=4, so keep one.
        t.q, t.k, t.v = (x[:1] for x in (t.q, t.k, t.v))
        mask, causal = sdpa_core_mask(case, t)
        rows.append(_measure_peak(case, t, lambda: sdpa_core.scaled_dot_product_attention(
            t.q, t.k, t.v, attn_mask=mask, is_causal=causal)))
    return rows


def _measure_peak(case: Case, t: Inputs, fn) -> dict:
    elem = t.q.element_size()
    io_bytes = (2 * t.q.numel() + t.k.numel() + t.v.numel()) * elem  # q, k, v, out
    row = {"case": case.label, "io": io_bytes,
           "sxs": t.q.shape[1] * case.sq * case.skv * elem, "peak": None, "reason": ""}
    try:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            out = fn()
        torch.cuda.synchronize()
        row["peak"] = torch.cuda.max_memory_allocated() - base
        del out
    except Exception as e:  # noqa: BLE001
        row["reason"] = _one_line(e)
    return row


# --------------------------------------------------------------------------- output


def environment() -> dict[str, str]:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "missing (CUDA-event timing)"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except Exception:  # noqa: BLE001
        commit = ""
    props = torch.cuda.get_device_properties(0)
    return {
        "card": f"{torch.cuda.get_device_name(0)} ({props.multi_processor_count} SMs)",
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "torch": torch.__version__,
        "CUDA": str(torch.version.cuda),
        "cuDNN": str(torch.backends.cudnn.version()),
        "triton": triton_version,
        "sdpa_core": sdpa_core.__version__ + (f" (git {commit})" if commit else ""),
    }


class Footnotes:
    """Numbers each distinct n/a reason once, so the table cells stay short."""

    def __init__(self):
        self.reasons: list[str] = []

    def ref(self, reason: str) -> str:
        if reason not in self.reasons:
            self.reasons.append(reason)
        return f"[{self.reasons.index(reason) + 1}]"

    def markdown(self) -> str:
        return "\n".join(f"- [{i + 1}] {r}" for i, r in enumerate(self.reasons))


def _md_escape(text: str, limit: int | None = None) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


def results_table(rows: list[Row], notes: Footnotes) -> str:
    head = ["case", "B,H", *COLUMNS, "sdpa_core / best other", "max abs diff vs", "sdpa_core path"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [_format_cell(row.cells[c], notes) for c in COLUMNS]
        diff = f"{row.max_diff:.3g} ({row.diff_ref})" if row.max_diff is not None else "-"
        lines.append("| " + " | ".join([
            f"{row.case.label}, {row.case.mode}", f"{row.case.batch},{row.case.heads}",
            *cells, _ratio(row), diff, _md_escape(_path_line(row.explain), 60),
        ]) + " |")
    return "\n".join(lines)


def _path_line(explained: str) -> str:
    """The "path: ..." line of sdpa_core.explain (fused kernel or fallback), else its first line."""
    lines = explained.splitlines()
    path = [ln for ln in lines if ln.startswith("path:")]
    line = (path or lines or [""])[0].removeprefix("path:").strip()
    return line.removesuffix(", because:")  # the reasons are listed under the table


def _format_cell(cell: Cell, notes: Footnotes) -> str:
    if cell.tflops is None:
        return f"n/a {notes.ref(cell.reason)}"
    value = f"{cell.tflops:.0f}" if cell.tflops >= 10 else f"{cell.tflops:.2g}"  # --quick sizes
    return value + (f" {cell.note}" if cell.note else "")


def _ratio(row: Row) -> str:
    mine = row.cells[SDPA_CORE].tflops
    others = [c.tflops for n, c in row.cells.items() if n != SDPA_CORE and c.tflops is not None]
    if mine is None or not others:
        return "-"
    return f"{mine / max(others):.2f}x"


def overhead_table(overhead: list[tuple[str, float | None]]) -> str:
    lines = ["| call (1x1x16x64 bf16) | host us/call |", "|---|---|"]
    lines += [f"| {_md_escape(n)} | {'n/a' if us is None else f'{us:.1f}'} |" for n, us in overhead]
    return "\n".join(lines)


def memory_table(mem: list[dict]) -> str:
    mib = lambda b: f"{b / 2**20:.0f}"
    lines = ["| sdpa_core call (B=1, H=16, D=128) | q+k+v+out MiB | peak above inputs MiB "
             "| one H x Sq x Skv bf16 matrix MiB |", "|---|---|---|---|"]
    for r in mem:
        peak = mib(r["peak"]) if r["peak"] is not None else f"n/a ({_md_escape(r['reason'])})"
        lines.append(f"| {r['case']} | {mib(r['io'])} | {peak} | {mib(r['sxs'])} |")
    return "\n".join(lines)


def report(env: dict, rows: list[Row], overhead, mem, quick: bool) -> str:
    notes = Footnotes()
    table = results_table(rows, notes)
    parts = [
        f"## {env['date']} — {env['card']}" + (" (--quick: smaller sizes, not comparable)" if quick else ""),
        "",
        " · ".join(f"{k} {v}" for k, v in env.items() if k not in ("date", "card")),
        "",
        "TFLOP/s, bf16, median of triton.testing.do_bench; \"materialized\" = the bias was passed "
        "as a (1, H, Sq, Skv) attn_mask because that backend cannot express it.",
        "",
        table,
    ]
    if notes.reasons:
        parts += ["", "n/a reasons:", "", notes.markdown()]
    parts += ["", "sdpa_core.explain per case:", ""]
    parts += [f"- {r.case.name}: {_md_escape('; '.join(r.explain.splitlines()))}" for r in rows]
    if overhead:
        parts += ["", overhead_table(overhead)]
    if mem:
        parts += ["", memory_table(mem)]
    return "\n".join(parts) + "\n"


def save_png(rows: list[Row], path: str) -> str:
    """Grouped bars, one group per case. Returns a message; matplotlib is optional."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on the GPU machine
        import matplotlib.pyplot as plt
    except ImportError:
        return f"matplotlib not installed: no PNG written (pip install matplotlib for {path})"
    width = 0.8 / len(COLUMNS)
    fig, ax = plt.subplots(figsize=(max(8, 1.4 * len(rows)), 5.5))
    for i, column in enumerate(COLUMNS):
        xs = [j + (i - (len(COLUMNS) - 1) / 2) * width for j in range(len(rows))]
        ys = [r.cells[column].tflops or 0.0 for r in rows]
        ax.bar(xs, ys, width, label=column)
        for x, r in zip(xs, rows):
            if r.cells[column].tflops is None:
                # x in data units, y in axes units: the label sits on the floor at any scale.
                ax.text(x, 0.01, "n/a", rotation=90, ha="center", va="bottom", fontsize=7,
                        transform=ax.get_xaxis_transform())
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r.case.name for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("TFLOP/s")
    ax.set_title(f"Attention, bf16 — {torch.cuda.get_device_name(0)}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"wrote {path}"


class Progress:
    """tqdm bar when available, plain prints otherwise (tqdm is optional)."""

    def __init__(self, total: int):
        try:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="run", file=sys.stderr)
        except ImportError:
            self.bar, self.done, self.total = None, 0, total

    def set(self, what: str) -> None:
        if self.bar is not None:
            self.bar.set_description(what)
        else:
            print(f"[{self.done + 1}/{self.total}] {what}", file=sys.stderr, flush=True)

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)
        else:
            self.done += 1

    def write(self, text: str) -> None:
        (self.bar.write if self.bar is not None else print)(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------- CLI


def parse_args(argv=None) -> argparse.Namespace:
    out = os.environ.get("OUT")
    default_png = str(Path(out) / "bench.png") if out else "bench.png"
    default_md = str(Path(out) / "bench.md") if out else "bench.md"
    all_cases = FWD_CASES + BWD_CASES
    p = argparse.ArgumentParser(
        prog="python -m sdpa_core.bench",
        description="sdpa_core vs torch SDPA (flash, cuDNN, efficient) and compiled FlexAttention, "
                    "forward TFLOP/s on one GPU.",
        epilog="cases: " + ", ".join(c.name for c in all_cases)
               + ". Exit status 2 with 'no CUDA device' when CUDA is unavailable.")
    p.add_argument("--cases", default="",
                   help="comma-separated case names (default: all forward cases)")
    p.add_argument("--bwd", action="store_true",
                   help="also run the fwd+bwd cases (sdpa_core has no fused backward yet)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: sequence lengths / 4, few reps; numbers not comparable")
    p.add_argument("--png", default=default_png, help=f"bar chart path, '' to skip (default {default_png})")
    p.add_argument("--md", default=default_md, help=f"Markdown report path, '' to skip (default {default_md})")
    p.add_argument("--append", action="store_true",
                   help="append to --md instead of overwriting (e.g. --md benchmarks/results.md)")
    p.add_argument("--no-extras", action="store_true",
                   help="skip the host-overhead and peak-memory measurements")
    args = p.parse_args(argv)
    args.case_list = select_cases(p, args, all_cases)
    return args


def select_cases(parser, args, all_cases: list[Case]) -> list[Case]:
    if not args.cases:
        cases = FWD_CASES + (BWD_CASES if args.bwd else [])
    else:
        by_name = {c.name: c for c in all_cases}
        names = [n.strip() for n in args.cases.split(",") if n.strip()]
        unknown = [n for n in names if n not in by_name]
        if unknown:
            parser.error(f"unknown case(s) {unknown}; known: {', '.join(by_name)}")
        cases = [by_name[n] for n in names]
    return [c.shrunk(4) for c in cases] if args.quick else cases


def main(argv=None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: sdpa_core.bench needs a CUDA GPU", file=sys.stderr)
        return 2
    env = environment()
    print(" · ".join(f"{k} {v}" for k, v in env.items()), flush=True)

    progress = Progress(len(args.case_list) * len(COLUMNS))
    rows = []
    for case in args.case_list:
        row = run_case(case, args.quick, progress, torch.device("cuda"))
        progress.write(f"{case.name}: sdpa_core path: {row.explain}")
        rows.append(row)
        torch.cuda.empty_cache()
    progress.close()

    overhead, mem = [], []
    if not args.no_extras:
        overhead, mem = host_overhead(args.quick), peak_memory(args.quick)

    text = report(env, rows, overhead, mem, args.quick)
    print("\n" + text)
    if args.md:
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        with open(args.md, "a" if args.append else "w") as f:
            f.write(("\n" if args.append else "") + text)
        print(f"wrote {args.md}")
    if args.png:
        print(save_png(rows, args.png))
    return 0


if __name__ == "__main__":
    sys.exit(main())
