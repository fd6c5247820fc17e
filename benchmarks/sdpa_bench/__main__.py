"""Command line: python -m benchmarks.sdpa_bench --help (run from the repository root).

Exit status: 0 when it ran (MISS verdicts included: they are ratios, not assertions); 2 with "no CUDA
device" without CUDA (argparse also uses 2 for bad arguments), so a step that expects numbers cannot pass
silently. --dry-run needs no GPU: every case and contender wired on tiny CPU tensors, nothing timed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from .cases import CASES, CASES_BY_NAME, MODES, make_inputs
from .contenders import COLUMNS, contenders
from .report import environment, report, save_png
from .timing import Options, run_row

PROG = "python -m benchmarks.sdpa_bench"


class Progress:
    """tqdm bar when available, plain lines on stderr otherwise (tqdm is optional)."""

    def __init__(self, total: int):
        try:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="run", file=sys.stderr)
        except ImportError:
            self.bar, self.done, self.total = None, 0, total

    def step(self, what: str) -> None:
        if self.bar is not None:
            self.bar.set_description(what)
            self.bar.update(1)
        else:
            self.done += 1
            print(f"[{self.done}/{self.total}] {what}", file=sys.stderr, flush=True)

    def write(self, text: str) -> None:
        (self.bar.write if self.bar is not None else print)(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    out = os.environ.get("OUT")
    default_md = str(Path(out) / "bench.md") if out else "bench.md"
    default_png = str(Path(out) / "bench.png") if out else "bench.png"
    p = argparse.ArgumentParser(
        prog=PROG,
        description="sdpa_core (policies auto and own) vs torch SDPA (default, flash, cuDNN, efficient) and "
                    "compiled FlexAttention: TFLOP/s per case, fwd and fwd+bwd, on one GPU, with ratio targets.",
        epilog="cases: " + ", ".join(c.name for c in CASES) + ". Exit status 2 with 'no CUDA device' when "
               "CUDA is unavailable (except --dry-run).")
    p.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)} "
                   f"(default: both)")
    p.add_argument("--contenders", default="", help="comma-separated columns (default: all): "
                   + ", ".join(COLUMNS))
    p.add_argument("--bwd", action="store_true", help=argparse.SUPPRESS)  # old flag: adds fwd+bwd
    p.add_argument("--quick", action="store_true",
                   help="smoke test: sequence lengths / 4, warmup 10 ms, rep 30 ms; numbers not comparable")
    p.add_argument("--dry-run", action="store_true",
                   help="no GPU needed: build every case and contender on tiny CPU tensors, call each "
                        "CPU-capable one once (FlexAttention eager), print the table skeleton; writes "
                        "--md/--png only when given")
    p.add_argument("--warmup-ms", type=float, default=50.0, help="do_bench warmup, ms (default 50)")
    p.add_argument("--rep-ms", type=float, default=200.0, help="do_bench repetition time, ms (default 200)")
    p.add_argument("--slow-s", type=float, default=0.5,
                   help="a call slower than this (s) is timed as the median of 3 calls (default 0.5)")
    p.add_argument("--md", default=None, help=f"Markdown report path, '' to skip (default {default_md})")
    p.add_argument("--png", default=None, help=f"bar chart path, '' to skip (default {default_png})")
    p.add_argument("--append", action="store_true",
                   help="append to --md instead of overwriting (e.g. --md benchmarks/results.md)")
    p.add_argument("--no-extras", action="store_true",
                   help="skip the host-overhead and peak-memory measurements")
    args = p.parse_args(argv)
    if args.md is None:
        args.md = "" if args.dry_run else default_md
    if args.png is None:
        args.png = "" if args.dry_run else default_png
    args.case_list = _pick(p, "case", _csv(args.cases), CASES_BY_NAME) if args.cases else list(CASES)
    args.mode_list = _pick(p, "mode", _csv(args.modes) + (["fwd+bwd"] if args.bwd else []),
                           {m: m for m in MODES})
    args.column_list = _pick(p, "contender", _csv(args.contenders), {c: c for c in COLUMNS}) \
        if args.contenders else list(COLUMNS)
    if args.quick:
        args.case_list = [c.shrunk(4) for c in args.case_list]
        args.warmup_ms, args.rep_ms = min(args.warmup_ms, 10.0), min(args.rep_ms, 30.0)
    if args.dry_run:
        args.case_list = [c.tiny() for c in args.case_list]
    return args


def _pick(parser, what: str, names: list[str], known: dict) -> list:
    """Known items in the order of `known`, each once; an unknown name is an argparse error (exit 2)."""
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        parser.error(f"unknown or no {what}(s) {unknown}; known: {', '.join(known)}")
    return [item for name, item in known.items() if name in names]


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print(f"no CUDA device: {PROG} needs a CUDA GPU (--dry-run checks the wiring on CPU)", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.dry_run else "cuda")
    env = environment(args.dry_run)
    print(" · ".join(f"{k} {v}" for k, v in env.items()), flush=True)
    opts = Options(args.warmup_ms, args.rep_ms, args.slow_s, args.dry_run)
    chosen = [c for c in contenders(compile_flex=not args.dry_run) if c.name in args.column_list]

    progress = Progress(len(args.case_list) * len(args.mode_list) * len(chosen))
    rows = []
    for case in args.case_list:  # one input set per case, shared by its modes
        t = make_inputs(case, device, grad="fwd+bwd" in args.mode_list)
        for mode in args.mode_list:
            row = run_row(case, mode, t, chosen, opts, progress.step)
            progress.write(f"{case.name} {mode}: path {row.path()} ({row.wall_s:.1f} s)")
            rows.append(row)
        del t
        if device.type == "cuda":
            torch.cuda.empty_cache()
    progress.close()

    extras_md, start = [], time.perf_counter()
    if not args.no_extras and not args.dry_run:
        from .extras import extras_markdown

        extras_md = extras_markdown(args.quick)
    extras_s = time.perf_counter() - start

    text = report(env, rows, args.column_list, extras_md, quick=args.quick, dry_run=args.dry_run,
                  extras_s=extras_s)
    print("\n" + text)
    if args.md:
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        with open(args.md, "a" if args.append else "w") as f:
            f.write(("\n" if args.append else "") + text)
        print(f"wrote {args.md}")
    if args.png:
        print(save_png(rows, args.column_list, args.png, f"Attention, bf16 — {env['card']}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
