"""The report: environment line, the TFLOP/s table with numbered "-" reasons, the ratio summary, the
sdpa_core paths, run times, and a grouped bar chart (matplotlib optional)."""

from __future__ import annotations

import datetime
import subprocess
from pathlib import Path

import torch

import sdpa_core

from .contenders import (FLEX, SDPA_COLUMNS, SDPA_CORE, SDPA_OWN, TORCH_DEFAULT, condensed_path,
                         has_policy)
from .summary import summary_markdown
from .timing import Cell, Row


def environment(dry_run: bool = False) -> dict[str, str]:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "missing (CUDA-event timing)"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except Exception:  # noqa: BLE001 - no git: no commit in the report
        commit = ""
    if dry_run or not torch.cuda.is_available():
        card = "CPU"
    else:
        props = torch.cuda.get_device_properties(0)
        card = f"{torch.cuda.get_device_name(0)} ({props.multi_processor_count} SMs)"
    return {
        "card": card,
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "torch": torch.__version__,
        "CUDA": str(torch.version.cuda),
        "cuDNN": str(torch.backends.cudnn.version()),
        "triton": triton_version,
        "sdpa_core": sdpa_core.__version__ + (f" (git {commit})" if commit else "")
                     + ("" if has_policy() else ", no dispatch_policy: 'own' column is -"),
    }


class Footnotes:
    """Numbers each distinct reason once, so the table cells stay short."""

    def __init__(self):
        self.reasons: list[str] = []

    def ref(self, reason: str) -> str:
        if reason not in self.reasons:
            self.reasons.append(reason)
        return f"[{self.reasons.index(reason) + 1}]"

    def markdown(self) -> str:
        return "\n".join(f"- [{i + 1}] {_md_escape(r)}" for i, r in enumerate(self.reasons))


def _md_escape(text: str, limit: int | None = None) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


def format_cell(cell: Cell, notes: Footnotes) -> str:
    if cell.ran:
        value = "ok"
    elif cell.tflops is None:
        return f"- {notes.ref(cell.reason)}"
    else:
        value = f"{cell.tflops:.0f}" if cell.tflops >= 10 else f"{cell.tflops:.2g}"  # --quick sizes
    return value + (f" {cell.note}" if cell.note else "")


def _ratio(row: Row) -> str:
    mine, base = row.cells.get(SDPA_CORE), row.cells.get(TORCH_DEFAULT)
    if not (mine and base and mine.tflops and base.tflops):
        return "-"
    return f"{mine.tflops / base.tflops:.2f}x"


def _diffs(row: Row) -> str:
    if not row.diffs:
        return "-"
    values = " / ".join(f"{row.diffs[c]:.3g}" if c in row.diffs else "-" for c in SDPA_COLUMNS)
    return f"{values} ({row.diff_ref})"


def results_table(rows: list[Row], columns: list[str], notes: Footnotes) -> str:
    head = ["case", "mode", "B,H", *columns, "sdpa_core / torch default",
            "max abs diff auto / own vs", "sdpa_core path"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [format_cell(row.cells[c], notes) if c in row.cells else "" for c in columns]
        lines.append("| " + " | ".join([
            row.case.label, row.mode, f"{row.case.batch},{row.case.heads}", *cells, _ratio(row),
            _diffs(row), _md_escape(row.path(), 90)]) + " |")
    return "\n".join(lines)


def _explained(rows: list[Row]) -> list[str]:
    """One line per row: the full explain() text; the own policy's too where its path differs."""
    out = []
    for r in rows:
        auto, own = (r.explained.get(c, "") for c in (SDPA_CORE, SDPA_OWN))
        out.append(f"- {r.case.name} {r.mode}: {_md_escape('; '.join(auto.splitlines()))}")
        if own and condensed_path(own) != condensed_path(auto):
            out.append(f"  - own: {_md_escape('; '.join(own.splitlines()))}")
    return out


def _run_times(rows: list[Row], extras_s: float) -> str:
    flex = [(r, r.cells[FLEX].first_call_s) for r in rows
            if FLEX in r.cells and r.cells[FLEX].first_call_s is not None]
    rows_s = sum(r.wall_s for r in rows)
    text = (f"Run time: {rows_s + extras_s:.0f} s (rows {rows_s:.0f} s, of which FlexAttention first calls "
            f"with compile {sum(s for _, s in flex):.0f} s; extras {extras_s:.0f} s).")
    if flex:
        text += " FlexAttention first call per row, s: " + ", ".join(
            f"{r.case.name} {r.mode} {s:.1f}" for r, s in flex) + "."
    return text


def report(env: dict, rows: list[Row], columns: list[str], extras_md: list[str], *, quick: bool,
           dry_run: bool, extras_s: float = 0.0) -> str:
    notes = Footnotes()
    table = results_table(rows, columns, notes)
    marker = (" (--dry-run: tiny CPU shapes, each contender called once, nothing timed)" if dry_run
              else " (--quick: smaller sizes, not comparable)" if quick else "")
    parts = [
        f"## {env['date']} — {env['card']}{marker}", "",
        " · ".join(f"{k} {v}" for k, v in env.items() if k not in ("date", "card")), "",
        "TFLOP/s, bf16, median of triton.testing.do_bench; fwd under torch.no_grad(), fwd+bwd = forward + "
        "out.backward(grad) counted as 3.5 x forward FLOPs; \"materialized\" = the bias was passed as a "
        "(1, H, Sq, Skv) attn_mask because that backend cannot express it; \"sdpa_core\" runs the dispatch "
        "policy \"auto\", \"sdpa_core own\" the policy \"own\".", "",
        table,
    ]
    if notes.reasons:
        parts += ["", "\"-\" reasons:", "", notes.markdown()]
    summary = summary_markdown(rows)
    if summary:
        parts += ["", summary]
    parts += ["", "sdpa_core.explain per row:", "", *_explained(rows)]
    for md in extras_md:
        parts += ["", md]
    if not dry_run:
        parts += ["", _run_times(rows, extras_s)]
    return "\n".join(parts) + "\n"


def save_png(rows: list[Row], columns: list[str], path: str, title: str) -> str:
    """Grouped bars, one panel per mode, one group per case. Returns a message; matplotlib is optional."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on the GPU machine
        import matplotlib.pyplot as plt
    except ImportError:
        return f"matplotlib not installed: no PNG written (pip install matplotlib for {path})"
    modes = list(dict.fromkeys(r.mode for r in rows))
    groups = max(sum(1 for r in rows if r.mode == m) for m in modes)
    fig, axes = plt.subplots(len(modes), 1, figsize=(max(8, 1.5 * groups), 4.5 * len(modes)), squeeze=False)
    width = 0.8 / len(columns)
    for ax, mode in zip(axes[:, 0], modes):
        mode_rows = [r for r in rows if r.mode == mode]
        for i, column in enumerate(columns):
            xs = [j + (i - (len(columns) - 1) / 2) * width for j in range(len(mode_rows))]
            ys = [(r.cells[column].tflops or 0.0) if column in r.cells else 0.0 for r in mode_rows]
            ax.bar(xs, ys, width, label=column)
            for x, y in zip(xs, ys):
                if not y:  # x in data units, y in axes units: the mark sits on the floor at any scale
                    ax.text(x, 0.01, "-", ha="center", va="bottom", fontsize=8,
                            transform=ax.get_xaxis_transform())
        ax.set_xticks(range(len(mode_rows)))
        ax.set_xticklabels([r.case.name for r in mode_rows], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(f"TFLOP/s, {mode}")
    axes[0, 0].set_title(title)
    axes[0, 0].legend(fontsize=7, ncol=4)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"wrote {path}"
