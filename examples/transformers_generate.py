"""Greedy generation with a Hugging Face transformers model on sdpa_core, next to transformers' "sdpa".

A small random-weight Llama-style model is built from a config (nothing is downloaded), twice with the same
seed: once with attn_implementation="sdpa", once with "sdpa_core". Both generate greedily for a
left-padded batch with a KV cache; the script prints the tokens, the largest logit difference, and
sdpa_core.explain for the first prefill and the first decode attention call (what sdpa_core received and
which path it took).

    PYTHONPATH=python python3 examples/transformers_generate.py [--device cuda --dtype bfloat16]
"""

import argparse
import contextlib

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import sdpa_core
import sdpa_core.integrations.transformers as sdpa_hf


def build_model(impl: str, device: str, dtype: torch.dtype, seed: int) -> LlamaForCausalLM:
    # GQA (8 query heads, 2 KV heads) and head_dim 64, as a real Llama-style config would have.
    cfg = LlamaConfig(vocab_size=512, hidden_size=512, intermediate_size=1024, num_hidden_layers=4,
                      num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=1024,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)  # same seed: both models get the same weights
    model = LlamaForCausalLM(cfg).to(device=device, dtype=dtype).eval()
    model.set_attn_implementation(impl)
    return model


class Capture:
    """Wraps sdpa_core.scaled_dot_product_attention to keep the first prefill (Sq > 1) and first decode
    (Sq == 1) call's arguments, so explain() can be shown for exactly what the model passed."""

    def __init__(self):
        self.calls = {}
        self._orig = sdpa_core.scaled_dot_product_attention

    def __enter__(self):
        def spy(query, key, value, **kwargs):
            phase = "prefill" if query.shape[2] > 1 else "decode"
            self.calls.setdefault(phase, (query, key, value, kwargs))
            return self._orig(query, key, value, **kwargs)
        sdpa_core.scaled_dot_product_attention = spy
        return self

    def __exit__(self, *exc):
        sdpa_core.scaled_dot_product_attention = self._orig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    sdpa_hf.register()

    # Three prompts of lengths 24, 17 and 9, left-padded to 24 (pad id 0, attention_mask 0 there).
    gen = torch.Generator().manual_seed(args.seed)
    lengths = [24, 17, 9]
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, -n:] = torch.randint(3, 512, (n,), generator=gen)
        mask[row, -n:] = 1
    ids, mask = ids.to(args.device), mask.to(args.device)

    results = {}
    capture = Capture()
    for impl in ("sdpa", "sdpa_core"):
        model = build_model(impl, args.device, dtype, args.seed)
        with torch.no_grad(), (capture if impl == "sdpa_core" else contextlib.nullcontext()):
            results[impl] = model.generate(ids, attention_mask=mask, max_new_tokens=args.new_tokens,
                                           do_sample=False, eos_token_id=None, output_logits=True,
                                           return_dict_in_generate=True)

    ref, ours = results["sdpa"], results["sdpa_core"]
    for impl, res in results.items():
        print(f"{impl:>9} tokens:")
        for row in res.sequences[:, ids.shape[1]:].tolist():
            print("   ", row)
    same = torch.equal(ref.sequences, ours.sequences)
    diff = max((a.float() - b.float()).abs().max().item() for a, b in zip(ref.logits, ours.logits))
    print(f"identical tokens: {same}; max |logit difference| over {len(ref.logits)} steps: {diff:.3g}")
    for phase in ("prefill", "decode"):
        q, k, v, kwargs = capture.calls[phase]
        print(f"\nsdpa_core.explain, first {phase} call (q {tuple(q.shape)}, k {tuple(k.shape)}):")
        print(sdpa_core.explain(q, k, v, **kwargs))


if __name__ == "__main__":
    main()
