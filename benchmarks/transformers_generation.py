"""Generation with a ~1B-parameter random-weight Llama-style model: transformers' "sdpa" next to "sdpa_core".

    python benchmarks/transformers_generation.py [--md out.md] [--batch 8 --prompt 2048 --new 256]

Same weights for both (same seed, nothing downloaded). Per implementation: the prefill time, the decode
tokens per second (greedy, every step forced to run by min_new_tokens), the peak memory, and from
torch.profiler the share of CUDA time spent in attention kernels over a shorter run (prefill + 32 steps).
Also printed: explain() for one prefill and one decode call, to show what sdpa_core received (a bias object,
no Sq x Skv mask).
"""

from __future__ import annotations

import argparse
import datetime
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

import sdpa_core
import sdpa_core.integrations.transformers as sdpa_hf

# Kernel-name fragments of attention kernels: torch's (flash, cuDNN, mem-efficient) and sdpa_core's.
ATTENTION_KERNELS = ("flash", "fmha", "cudnn", "attention", "attn", "decode_sm80", "fwd_sm80", "split_kv_combine")


def build(impl: str, args) -> LlamaForCausalLM:
    # Llama-3.2-1B's shape: 16 layers, hidden 2048, 32 query heads and 8 kv heads of dim 64.
    cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                      num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(device="cuda", dtype=torch.bfloat16).eval()
    model.set_attn_implementation(impl)
    return model


def generate(model, ids, new_tokens: int):
    return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                          min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)


def timed(fn) -> tuple[float, object]:
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start, out


def attention_share(model, ids) -> float:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        generate(model, ids, 32)
        torch.cuda.synchronize()
    total = attention = 0.0
    for event in prof.key_averages():
        cuda_us = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0.0)
        if event.device_type == torch.autograd.DeviceType.CUDA:
            total += cuda_us
            if any(k in event.key.lower() for k in ATTENTION_KERNELS):
                attention += cuda_us
    return attention / total if total else float("nan")


def explain_calls(model, ids) -> dict[str, str]:
    """explain() for the first prefill and the first decode call sdpa_core receives."""
    seen, original = {}, sdpa_core.scaled_dot_product_attention

    def spy(query, key, value, **kwargs):
        phase = "prefill" if query.shape[2] > 1 else "decode"
        if phase not in seen:
            seen[phase] = sdpa_core.explain(query, key, value, **kwargs)
        return original(query, key, value, **kwargs)
    sdpa_core.scaled_dot_product_attention = spy
    try:
        generate(model, ids, 2)
    finally:
        sdpa_core.scaled_dot_product_attention = original
    return seen


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=2048)
    parser.add_argument("--new", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--md", help="write the table here too")
    args = parser.parse_args(argv)
    ids = torch.randint(3, args.vocab, (args.batch, args.prompt), device="cuda",
                        generator=torch.Generator("cuda").manual_seed(0))
    rows, tokens, explained = [], {}, {}
    for impl in ("sdpa", sdpa_hf.register()):
        model = build(impl, args)
        params = sum(p.numel() for p in model.parameters())
        generate(model, ids, 8)  # warm-up at the timed shapes: kernels loaded, cuBLAS heuristics, allocator
        torch.cuda.reset_peak_memory_stats()
        prefill_s, _ = timed(lambda: generate(model, ids, 1))
        total_s, out = timed(lambda: generate(model, ids, args.new))
        peak_gib = torch.cuda.max_memory_allocated() / 2**30
        decode_tps = args.batch * (args.new - 1) / max(total_s - prefill_s, 1e-9)
        share = attention_share(model, ids)
        tokens[impl] = out[:, args.prompt:]
        if impl != "sdpa":
            explained = explain_calls(model, ids)
        rows.append((impl, params, prefill_s, total_s, decode_tps, peak_gib, share))
        del model
        torch.cuda.empty_cache()
    same = (tokens["sdpa"] == tokens[rows[1][0]]).float().mean().item()
    lines = [f"# transformers generation ({torch.cuda.get_device_name()}, {datetime.date.today()}, torch "
             f"{torch.__version__}, transformers {transformers.__version__})", "",
             f"Llama-style, {rows[0][1] / 1e9:.2f} B parameters, bf16, random weights; batch {args.batch}, "
             f"prompt {args.prompt} tokens, {args.new} greedy new tokens.", "",
             "| attn_implementation | prefill s | generate s | decode tokens/s | peak GiB | attention share of CUDA time (prefill + 32 steps) |",
             "|---|---|---|---|---|---|"]
    for impl, _, prefill_s, total_s, tps, peak, share in rows:
        lines.append(f"| {impl} | {prefill_s:.3f} | {total_s:.2f} | {tps:.0f} | {peak:.2f} | {100 * share:.1f}% |")
    lines += ["", f"Greedy tokens identical at {100 * same:.1f}% of positions (bf16; random weights make near-ties).",
              "", "sdpa_core.explain for the first prefill and decode call:"]
    for phase, text in explained.items():
        lines.append(f"- {phase}: " + " / ".join(x.strip() for x in text.strip().splitlines()))
    text = "\n".join(lines) + "\n"
    print(text)
    if args.md:
        with open(args.md, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
