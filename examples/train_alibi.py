"""Train a small causal ALiBi transformer twice, from the same initial weights on the same batches: once with
sdpa_core (``AlibiBias(causal=CausalVariant.UPPER_LEFT)``, never materialized by sdpa_core's kernels) and
once with PyTorch's math SDPA given the ALiBi bias as a dense float mask built here by hand. The two loss
curves must agree; the script exits 1 when the final losses differ by more than ``--tol`` (relative).

The task is synthetic and deterministic: copy a random string after a separator token
(``a1 .. aL SEP a1 .. aL``), scored on the copied half, so the model has to learn to look back exactly
L + 1 positions: ALiBi's distance penalty is what it has to learn to overcome.

    python examples/train_alibi.py                       # CPU, float32, 300 steps
    python examples/train_alibi.py --steps 100           # well under a minute on a CPU
    python examples/train_alibi.py --device cuda --precision bf16   # bf16 autocast on a GPU

Tolerance (``--tol``, relative difference of the mean loss over the last 10 steps): 2e-3 for float32,
where the two runs differ only in summation order; 5e-2 for bf16 autocast, where the two attention paths
round differently at every step and training amplifies the differences.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import sdpa_core
from sdpa_core import AlibiBias, CausalVariant

SEP = 1  # separator token; 0 is unused, symbols are 2 .. vocab - 1
DEFAULT_TOL = {"fp32": 2e-3, "bf16": 5e-2}


def sdpa_core_attention(q, k, v, slopes):
    """ALiBi + upper-left causal as a bias object: sdpa_core never builds the (S, S) bias on its fused path."""
    seq = q.shape[-2]
    bias = AlibiBias(slopes, seq, seq, causal=CausalVariant.UPPER_LEFT)
    return sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=bias)


def alibi_causal_mask(slopes: torch.Tensor, seq: int) -> torch.Tensor:
    """(H, S, S) float32: -slope[h] * (i - j) where key j <= query i, -inf above the diagonal. Built from
    the definition (Press et al., 2022), without sdpa_core."""
    i = torch.arange(seq, device=slopes.device).view(seq, 1)
    j = torch.arange(seq, device=slopes.device).view(1, seq)
    distance = (i - j).to(torch.float32)
    mask = -slopes.view(-1, 1, 1) * distance
    return mask.masked_fill(j > i, float("-inf"))


def math_attention(q, k, v, slopes):
    """The reference: PyTorch's math SDPA backend with the ALiBi bias materialized as a float mask."""
    mask = alibi_causal_mask(slopes, q.shape[-2])
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class Block(nn.Module):
    def __init__(self, d_model: int, heads: int, attention):
        super().__init__()
        self.heads, self.attention = heads, attention
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))
        self.register_buffer("slopes", sdpa_core.alibi_slopes(heads), persistent=False)

    def forward(self, x):
        batch, seq, d_model = x.shape
        # one packed projection; q, k, v are (B, H, S, D) views of it, as in most models
        q, k, v = self.qkv(self.norm1(x)).view(batch, seq, 3, self.heads, d_model // self.heads).permute(2, 0, 3, 1, 4)
        attended = self.attention(q, k, v, self.slopes)
        x = x + self.proj(attended.transpose(1, 2).reshape(batch, seq, d_model))
        return x + self.mlp(self.norm2(x))


class AlibiLM(nn.Module):
    """A decoder-only language model with no position embedding: ALiBi alone tells positions apart."""

    def __init__(self, vocab: int, d_model: int, heads: int, layers: int, attention):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.blocks = nn.ModuleList(Block(d_model, heads, attention) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)

    def set_attention(self, attention):
        for block in self.blocks:
            block.attention = attention

    def forward(self, tokens):
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def copy_batches(steps: int, batch: int, length: int, vocab: int, seed: int):
    """(inputs, targets, loss mask) per step: ``a1 .. aL SEP a1 .. aL`` shifted by one, scored on the copy."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        symbols = torch.randint(2, vocab, (batch, length), generator=gen)
        seq = torch.cat([symbols, torch.full((batch, 1), SEP), symbols], dim=1)
        scored = torch.zeros(2 * length, dtype=torch.bool)
        scored[length:] = True  # targets at positions L .. 2L - 1 are the copied symbols
        yield seq[:, :-1], seq[:, 1:], scored


def loss_of(model, inputs, targets, scored, autocast_dtype):
    with torch.autocast(inputs.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        logits = model(inputs)
    return F.cross_entropy(logits[:, scored].float().flatten(0, 1), targets[:, scored].flatten())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="fp32, or bf16 autocast (CUDA)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=12, help="symbols to copy (sequence length 2L + 1)")
    parser.add_argument("--vocab", type=int, default=16)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tol", type=float, default=None, help="relative tolerance on the final loss "
                        "(default: 2e-3 for fp32, 5e-2 for bf16)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    autocast_dtype = torch.bfloat16 if args.precision == "bf16" else None
    tol = DEFAULT_TOL[args.precision] if args.tol is None else args.tol

    torch.manual_seed(args.seed)
    ours = AlibiLM(args.vocab, args.d_model, args.heads, args.layers, sdpa_core_attention).to(device)
    reference = copy.deepcopy(ours)  # identical initial weights
    reference.set_attention(math_attention)
    # lr 1e-3 learns the copy smoothly (loss ~0.26 after 300 steps); at 3e-3 the copy is learned in a sudden
    # drop whose timing float rounding shifts, and the two curves part for a while without either being wrong.
    optimizers = [torch.optim.AdamW(m.parameters(), lr=args.lr) for m in (ours, reference)]
    models = {"sdpa_core": ours, "torch math": reference}

    tokens = (args.batch, 2 * args.length)
    print(f"sdpa_core {sdpa_core.__version__}, torch {torch.__version__}, {device}, {args.precision}; "
          f"{args.layers} layers, d_model {args.d_model}, {args.heads} heads, batch x seq {tokens}, "
          f"{args.steps} steps")
    q = torch.zeros(args.batch, args.heads, tokens[1], args.d_model // args.heads, device=device,
                    dtype=autocast_dtype or torch.float32, requires_grad=True)
    bias = AlibiBias(ours.blocks[0].slopes, tokens[1], tokens[1], causal=CausalVariant.UPPER_LEFT)
    print("sdpa_core path while training:",
          sdpa_core.explain(q, q, q, attn_mask=bias).replace("\n", "\n  "))
    print(f"{'step':>5} {'sdpa_core':>10} {'torch math':>10} {'rel diff':>9}")

    curves = {name: [] for name in models}
    start = time.perf_counter()
    for step, (inputs, targets, scored) in enumerate(copy_batches(args.steps, args.batch, args.length, args.vocab,
                                                                   args.seed + 1)):
        inputs, targets = inputs.to(device), targets.to(device)
        for (name, model), optimizer in zip(models.items(), optimizers):
            loss = loss_of(model, inputs, targets, scored.to(device), autocast_dtype)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            curves[name].append(loss.item())
        a, b = curves["sdpa_core"][-1], curves["torch math"][-1]
        if step % 25 == 0 or step == args.steps - 1:
            print(f"{step:5d} {a:10.5f} {b:10.5f} {abs(a - b) / abs(b):9.2e}")
    elapsed = time.perf_counter() - start

    ours_curve, ref_curve = curves["sdpa_core"], curves["torch math"]
    max_rel = max(abs(a - b) / abs(b) for a, b in zip(ours_curve, ref_curve))
    tail = min(10, len(ours_curve))
    final_ours, final_ref = sum(ours_curve[-tail:]) / tail, sum(ref_curve[-tail:]) / tail
    final_rel = abs(final_ours - final_ref) / abs(final_ref)
    chance = math.log(args.vocab - 2)
    print(f"\n{elapsed:.1f} s for {args.steps} steps of both models")
    print(f"max relative difference over the curve: {max_rel:.2e}")
    print(f"final loss (mean of the last {tail} steps): sdpa_core {final_ours:.5f}, torch math {final_ref:.5f}, "
          f"relative difference {final_rel:.2e} (tolerance {tol:.0e}); chance level {chance:.3f}")
    if not all(math.isfinite(x) for x in ours_curve + ref_curve):
        print("FAIL: a loss is not finite")
        return 1
    if final_rel > tol:
        print("FAIL: the final losses differ by more than the tolerance")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
