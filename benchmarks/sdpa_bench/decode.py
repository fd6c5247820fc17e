"""The decode section: a few query rows against a long KV cache, in GB/s of K and V read.

    python -m benchmarks.sdpa_bench.decode [--md decode.md] [--rep-ms 100] [--warmup-ms 25]

The cases are issue 8's (bf16, d128, Hq=32, Hkv=8, lower-right causal): a decode step reads every K/V
byte once and does little else, so bytes per second against the HBM peak is the measure. Every contender
gets the same request (GQA K/V, lower-right causal, ALiBi materialized where torch needs a tensor); a
torch backend that refuses it shows "-" with the reason. Outputs are checked against sdpa_core's own
kernel before timing (max |diff| in the table), so a fast wrong answer cannot win.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import platform

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right

import sdpa_core

from .contenders import one_line
from .timing import median_ms

HBM_PEAK_GBS = {"H100": 3350.0, "H200": 4800.0}  # SXM datasheet figures


@dataclasses.dataclass(frozen=True)
class DecodeCase:
    batch: int
    sq: int
    skv: int
    alibi: bool = False
    padding: bool = False  # a (B, 1, 1, Skv) bool key-padding mask (the last 10% of each row's keys unused)
    d: int = 128
    heads_q: int = 32
    heads_kv: int = 8

    @property
    def label(self) -> str:
        extra = (" ALiBi" if self.alibi else "") + (" key-padding mask" if self.padding else "")
        return f"B={self.batch}, Sq={self.sq}, Skv={self.skv // 1024}k{extra}"

    @property
    def kv_bytes(self) -> int:
        return 2 * self.batch * self.heads_kv * self.skv * self.d * 2  # K and V, bf16


CASES = [
    DecodeCase(8, 1, 8192),
    DecodeCase(8, 4, 8192),
    DecodeCase(1, 1, 32768),
    DecodeCase(64, 1, 2048),
    DecodeCase(8, 1, 8192, alibi=True),
    DecodeCase(1, 1, 32768, alibi=True),
    DecodeCase(8, 1, 8192, padding=True),
]


def _inputs(case: DecodeCase, device):
    torch.manual_seed(0)
    q = torch.randn(case.batch, case.heads_q, case.sq, case.d, device=device, dtype=torch.bfloat16)
    k = torch.randn(case.batch, case.heads_kv, case.skv, case.d, device=device, dtype=torch.bfloat16)
    v = torch.randn_like(k)
    slopes = sdpa_core.alibi_slopes(case.heads_q).to(device) if case.alibi else None
    if case.padding:  # the mask stands in for the slopes: each case has one of them
        keep = torch.arange(case.skv, device=device) < int(case.skv * 0.9)
        slopes = keep[None, None, None, :].expand(case.batch, 1, 1, case.skv).contiguous()
    return q, k, v, slopes


def _our_bias(case, slopes):
    """The case's request as an sdpa_core bias object (``slopes`` holds the key-padding mask for that case)."""
    if case.padding:
        return sdpa_core.TensorBias(slopes)
    if slopes is not None:
        return sdpa_core.AlibiBias(slopes, case.sq, case.skv, causal=sdpa_core.CausalVariant.LOWER_RIGHT)
    return sdpa_core.causal_lower_right(case.sq, case.skv)


def _ours(case, q, k, v, slopes, policy: str):
    bias = _our_bias(case, slopes)

    def run():
        with sdpa_core.dispatch_policy(policy):
            return sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=True)
    return run


def _alibi_tensor(case, q, slopes):
    """(1, Hq, Sq, Skv) bf16 additive ALiBi + lower-right causal: what torch needs for this request."""
    i = torch.arange(case.sq, device=q.device, dtype=torch.float32)[:, None] + (case.skv - case.sq)
    j = torch.arange(case.skv, device=q.device, dtype=torch.float32)[None, :]
    values = -slopes[:, None, None] * (i - j).abs()
    return values.masked_fill(j > i, float("-inf"))[None].to(torch.bfloat16)


def _torch(case, q, k, v, slopes, backend):
    if case.padding:
        mask = slopes
    else:
        mask = _alibi_tensor(case, q, slopes) if slopes is not None else causal_lower_right(case.sq, case.skv)

    def run():
        if backend is None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    return run


CONTENDERS = {
    "sdpa_core (own)": lambda c, *t: _ours(c, *t, "own"),
    "sdpa_core (auto)": lambda c, *t: _ours(c, *t, "auto"),
    "torch default": lambda c, *t: _torch(c, *t, None),
    "torch flash": lambda c, *t: _torch(c, *t, SDPBackend.FLASH_ATTENTION),
    "torch cuDNN": lambda c, *t: _torch(c, *t, SDPBackend.CUDNN_ATTENTION),
    "torch efficient": lambda c, *t: _torch(c, *t, SDPBackend.EFFICIENT_ATTENTION),
}


def run_case(case: DecodeCase, warmup_ms: float, rep_ms: float) -> dict:
    q, k, v, slopes = _inputs(case, "cuda")
    reference = CONTENDERS["sdpa_core (own)"](case, q, k, v, slopes)().float()
    row = {"case": case, "cells": {}, "explain": ""}
    with sdpa_core.dispatch_policy("own"):
        row["explain"] = sdpa_core.explain(q, k, v, attn_mask=_our_bias(case, slopes), enable_gqa=True)
    for name, build in CONTENDERS.items():
        try:
            fn = build(case, q, k, v, slopes)
            diff = (fn().float() - reference).abs().max().item()
            ms = median_ms(fn, warmup_ms, rep_ms, [])
            row["cells"][name] = (case.kv_bytes / ms / 1e6, diff, "")
        except Exception as e:  # a backend that refuses the request shows why
            row["cells"][name] = (None, None, one_line(e))
    return row


def report(rows: list[dict]) -> str:
    name = torch.cuda.get_device_name()
    peak = next((v for key, v in HBM_PEAK_GBS.items() if key in name), None)
    lines = [f"# Decode: GB/s of K+V read ({name}, {datetime.date.today()}, torch {torch.__version__}, "
             f"cuDNN {torch.backends.cudnn.version()}, Python {platform.python_version()})", "",
             "bf16, d128, Hq=32, Hkv=8, lower-right causal; ALiBi rows add ALiBi (torch: materialized, bf16); "
             "the key-padding row has a (B, 1, 1, Skv) bool mask and no causal part (the same tensor for torch). "
             + (f"HBM peak {peak:.0f} GB/s." if peak else ""), ""]
    names = list(CONTENDERS)
    lines.append("| case | " + " | ".join(names) + " | ours / best torch |")
    lines.append("|---" * (len(names) + 2) + "|")
    for row in rows:
        cells, best_torch = [], 0.0
        for n in names:
            gbs, diff, why = row["cells"][n]
            if gbs is None:
                cells.append("-")
                continue
            pct = f" ({100 * gbs / peak:.0f}%)" if peak else ""
            cells.append(f"{gbs:.0f}{pct}" + (f" [diff {diff:.1e}]" if diff and diff > 0.05 else ""))
            if n.startswith("torch"):
                best_torch = max(best_torch, gbs)
        ours = row["cells"]["sdpa_core (own)"][0]
        ratio = f"{ours / best_torch:.2f}" if ours and best_torch else "-"
        lines.append(f"| {row['case'].label} | " + " | ".join(cells) + f" | {ratio} |")
    lines += ["", "Refusals:"]
    for row in rows:
        for n, (gbs, _, why) in row["cells"].items():
            if gbs is None:
                lines.append(f"- {row['case'].label}, {n}: {why}")
    lines += ["", "Paths (sdpa_core, own kernels):"]
    for row in rows:
        first = row["explain"].strip().splitlines()
        lines.append(f"- {row['case'].label}: " + " / ".join(x.strip() for x in first[:3]))
    return "\n".join(lines) + "\n"


def run_cli(doc: str, make_text, argv=None) -> None:
    """The serving benchmarks' command line: --md, --warmup-ms, --rep-ms; make_text(warmup_ms, rep_ms)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--md", help="write the tables here too")
    parser.add_argument("--warmup-ms", type=float, default=25.0)
    parser.add_argument("--rep-ms", type=float, default=100.0)
    args = parser.parse_args(argv)
    text = make_text(args.warmup_ms, args.rep_ms)
    print(text)
    if args.md:
        with open(args.md, "w") as f:
            f.write(text)


def main(argv=None) -> None:
    run_cli(__doc__, lambda warmup, rep: report([run_case(case, warmup, rep) for case in CASES]), argv)


if __name__ == "__main__":
    main()
