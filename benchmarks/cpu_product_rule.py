"""The product rule on CPU: sdpa_core against the torch call it replaces, same request, same process.

    python benchmarks/cpu_product_rule.py [--threads N] [--reps 15]

Times is_causal (upper-left) and lower-right causal in float32 and bfloat16, torch and sdpa_core
interleaved call by call so that machine noise hits both alike, and prints the median time of each and
their ratio (the target: sdpa_core / torch <= 1.05). No timed assertions: this prints, it does not judge.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

import sdpa_core


def _interleaved(a, b, reps: int) -> tuple[float, float]:
    for _ in range(2):  # warm-up
        a(), b()
    ta, tb = [], []
    for _ in range(reps):
        for fn, times in ((a, ta), (b, tb)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(ta) * 1e3, statistics.median(tb) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads, B=2 H=8 D=64; median ms of {args.reps}")
    print("| case | dtype | torch ms | sdpa_core ms | ratio |\n|---|---|---|---|---|")
    for dtype in (torch.float32, torch.bfloat16):
        def rand(*shape):
            return torch.randn(*shape).to(dtype)

        q, k, v = rand(2, 8, 1024, 64), rand(2, 8, 1024, 64), rand(2, 8, 1024, 64)
        cases = {
            "is_causal S1k": (lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                              lambda: sdpa_core.scaled_dot_product_attention(q, k, v, is_causal=True)),
        }
        ql = rand(2, 8, 512, 64)
        torch_lr, ours_lr = causal_lower_right(512, 1024), sdpa_core.causal_lower_right(512, 1024)
        cases["lower-right Sq512/Skv1k"] = (
            lambda: F.scaled_dot_product_attention(ql, k, v, attn_mask=torch_lr),
            lambda: sdpa_core.scaled_dot_product_attention(ql, k, v, attn_mask=ours_lr))
        for name, (theirs, ours) in cases.items():
            t_torch, t_ours = _interleaved(theirs, ours, args.reps)
            print(f"| {name} | {str(dtype).replace('torch.', '')} | {t_torch:.2f} | {t_ours:.2f} | "
                  f"{t_ours / t_torch:.3f} |")


if __name__ == "__main__":
    main()
