"""The serving layouts: paged and packed KV caches for decode, and a variable-length prefill batch.

    python -m benchmarks.sdpa_bench.varlen [--md varlen.md] [--rep-ms 100] [--warmup-ms 25]

Paged decode: issue 8's decode cases (bf16, d128, Hq=32, Hkv=8, lower-right causal) through libsdpa's
one-launch varlen path with packed keys and with a shuffled page pool (page_size 16 and 64), next to the
dense (B, H, S, D) call, in GB/s of K+V read. Varlen prefill: one batch of causal sequences of 100 to 8000
tokens summing to 32k (bf16, d128, H=16), in TFLOP/s, next to one 8k causal sequence through the same
kernels, and to torch's ``varlen_attn`` and dense flash call where this torch has them.

The kernel path is timed through ``sdpa_core._kernels.try_forward_varlen``: ``varlen_attn``'s argument
checks read the lengths on the host, which a server that built its tables itself skips (the public call
is timed too, for the prefill batch). Every varlen output is compared with the dense call's before timing.
"""

from __future__ import annotations

import datetime
import inspect
import platform

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import sdpa_core
from sdpa_core import _kernels
from sdpa_core._kernel_bias import KernelBias

from .contenders import one_line
from .decode import CASES, _inputs, _ours, run_cli
from .timing import median_ms

LOWER_RIGHT = sdpa_core.CausalVariant.LOWER_RIGHT
PREFILL_LENGTHS = [8000, 5868, 4000, 3000, 2500, 2000, 1800, 1500, 1200, 1000, 800, 500, 300, 200, 100]  # 32768


def _cu(lengths, device) -> torch.Tensor:
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lengths).cumsum(0)
    return cu.to(device)


def _kernel_call(q, k, v, causal, cu_q, cu_k, used, table, max_q, max_k, out):
    """One libsdpa launch over a packed/paged batch; raises when no kernel takes it."""
    bias = KernelBias.causal_only(causal)
    scale = q.shape[-1] ** -0.5

    def run():
        if not _kernels.try_forward_varlen(q, k, v, bias, scale, cu_q, cu_k, used, table, max_q, max_k, 0, out, None):
            raise RuntimeError("libsdpa has no kernel for this varlen batch")
        return out
    return run


def _paged_pool(packed: torch.Tensor, batch: int, page: int):
    """``packed`` (B * S, H, D) as a pool of pages in a shuffled order, and its (B, pages) table."""
    pages = packed.shape[0] // page
    order = torch.randperm(pages, device=packed.device)
    pool = torch.empty(pages, page, *packed.shape[1:], device=packed.device, dtype=packed.dtype)
    pool[order] = packed.view(pages, page, *packed.shape[1:])
    return pool, order.view(batch, -1).to(torch.int32)


def paged_decode_rows(warmup_ms: float, rep_ms: float) -> list[str]:
    lines = ["## Paged and packed KV caches (decode)", "",
             "GB/s of K+V read; ratio to the dense (B, H, S, D) call of the same case; [diff] = max |out - dense|.",
             "", "| case | dense | varlen packed | paged 16 | paged 64 | paged 16 / dense | paged 64 / dense |",
             "|---|---|---|---|---|---|---|"]
    for case in [c for c in CASES if not c.alibi and not c.padding]:
        q, k, v, _ = _inputs(case, "cuda")
        dense = _ours(case, q, k, v, None, "own")
        want = dense()
        tq = q.transpose(1, 2).reshape(case.batch * case.sq, case.heads_q, case.d)
        cu_q = _cu([case.sq] * case.batch, "cuda")
        cu_k = _cu([case.skv] * case.batch, "cuda")
        used = torch.full((case.batch,), case.skv, device="cuda", dtype=torch.int32)
        packed_k, packed_v = (t.transpose(1, 2).reshape(-1, case.heads_kv, case.d).contiguous() for t in (k, v))
        out = torch.empty_like(tq)
        calls = {"dense": dense,
                 "varlen packed": _kernel_call(tq, packed_k, packed_v, LOWER_RIGHT, cu_q, cu_k, None, None,
                                               case.sq, case.skv, out)}
        for page in (16, 64):
            pool_k, table = _paged_pool(packed_k, case.batch, page)
            pool_v = torch.empty_like(pool_k)
            pool_v[table.view(-1).long()] = packed_v.view(-1, page, case.heads_kv, case.d)
            calls[f"paged {page}"] = _kernel_call(tq, pool_k, pool_v, LOWER_RIGHT, cu_q, None, used, table,
                                                  case.sq, case.skv, out)
        gbs, cells = {}, []
        for name, fn in calls.items():
            got = fn()
            got = got if name == "dense" else got.view(case.batch, case.sq, case.heads_q, case.d).transpose(1, 2)
            diff = (got.float() - want.float()).abs().max().item()
            gbs[name] = case.kv_bytes / median_ms(fn, warmup_ms, rep_ms, []) / 1e6
            cells.append(f"{gbs[name]:.0f}" + (f" [diff {diff:.1e}]" if diff > 0 else ""))
        ratios = [f"{gbs[f'paged {p}'] / gbs['dense']:.2f}" for p in (16, 64)]
        lines.append(f"| {case.label} | " + " | ".join(cells + ratios) + " |")
    return lines


def _torch_varlen(q, k, v, cu, max_len):
    """torch.nn.attention.varlen.varlen_attn, causal, in whichever form this torch spells it."""
    from torch.nn.attention.varlen import varlen_attn
    params = inspect.signature(varlen_attn).parameters
    causal = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
    return lambda: varlen_attn(q, k, v, cu, cu, max_len, max_len, **causal)


def varlen_prefill_rows(warmup_ms: float, rep_ms: float) -> list[str]:
    heads, d, device = 16, 128, "cuda"
    torch.manual_seed(0)
    total = sum(PREFILL_LENGTHS)
    q, k, v = (torch.randn(total, heads, d, device=device, dtype=torch.bfloat16) for _ in range(3))
    cu = _cu(PREFILL_LENGTHS, device)
    max_len = max(PREFILL_LENGTHS)
    flops = sum(4 * n * (n + 1) // 2 * d * heads for n in PREFILL_LENGTHS)
    out = torch.empty_like(q)
    calls = {
        "sdpa_core varlen (kernel)": _kernel_call(q, k, v, sdpa_core.CausalVariant.UPPER_LEFT, cu, cu, None, None,
                                                  max_len, max_len, out),
        "sdpa_core.varlen_attn": lambda: sdpa_core.varlen_attn(q, k, v, cu, cu, max_len, max_len,
                                                               causal=sdpa_core.CausalVariant.UPPER_LEFT),
        "torch varlen_attn": _torch_varlen(q, k, v, cu, max_len),
    }
    # the reference: each sequence alone through torch's dense flash kernel
    starts = cu.tolist()
    want = torch.cat([F.scaled_dot_product_attention(*(t[a:b].transpose(0, 1)[None] for t in (q, k, v)),
                                                     is_causal=True)[0].transpose(0, 1)
                      for a, b in zip(starts[:-1], starts[1:])])
    lines = ["## Variable-length prefill", "",
             f"bf16, d128, H=16, causal; one batch of {len(PREFILL_LENGTHS)} sequences of 100 to 8000 tokens "
             f"({total} in all) against one 8k causal sequence (B=1); TFLOP/s (causal FLOPs); "
             "[diff] = max |out - torch per sequence|.", "", "| call | TFLOP/s | note |", "|---|---|---|"]
    ours_varlen = None
    for name, fn in calls.items():
        try:
            diff = (fn().float() - want.float()).abs().max().item()
            tflops = flops / median_ms(fn, warmup_ms, rep_ms, []) / 1e9
            ours_varlen = tflops if name == "sdpa_core varlen (kernel)" else ours_varlen
            lines.append(f"| {name} | {tflops:.0f} | diff {diff:.1e} |")
        except Exception as e:  # a torch without varlen_attn, or one that refuses
            lines.append(f"| {name} | - | {one_line(e)} |")
    n = 8192
    q8, k8, v8 = (torch.randn(1, heads, n, d, device=device, dtype=torch.bfloat16) for _ in range(3))
    flops8 = 4 * n * (n + 1) // 2 * d * heads
    one = {"sdpa_core, one 8k sequence (own)": lambda: _own_causal(q8, k8, v8)}
    for name, backend in (("torch flash, one 8k sequence", SDPBackend.FLASH_ATTENTION),
                          ("torch cuDNN, one 8k sequence", SDPBackend.CUDNN_ATTENTION)):
        one[name] = (lambda b: lambda: _torch_causal(q8, k8, v8, b))(backend)
    ours_one = None
    for name, fn in one.items():
        try:
            tflops = flops8 / median_ms(fn, warmup_ms, rep_ms, []) / 1e9
            ours_one = tflops if name.startswith("sdpa_core") else ours_one
            lines.append(f"| {name} | {tflops:.0f} | |")
        except Exception as e:
            lines.append(f"| {name} | - | {one_line(e)} |")
    if ours_varlen and ours_one:
        lines += ["", f"sdpa_core varlen / one 8k sequence: {ours_varlen / ours_one:.2f}"]
    return lines


def _own_causal(q, k, v):
    with sdpa_core.dispatch_policy("own"):
        return sdpa_core.scaled_dot_product_attention(q, k, v, is_causal=True)


def _torch_causal(q, k, v, backend):
    with sdpa_kernel(backend):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def main(argv=None) -> None:
    def text(warmup_ms: float, rep_ms: float) -> str:
        head = [f"# Serving layouts ({torch.cuda.get_device_name()}, {datetime.date.today()}, "
                f"torch {torch.__version__}, Python {platform.python_version()})", ""]
        lines = head + paged_decode_rows(warmup_ms, rep_ms) + [""] + varlen_prefill_rows(warmup_ms, rep_ms)
        return "\n".join(lines) + "\n"
    run_cli(__doc__, text, argv)


if __name__ == "__main__":
    main()
