"""Which path each bias takes on this machine, and a check of each result against PyTorch."""

import torch

import sdpa_core
from sdpa_core import CausalVariant

device = "cuda" if torch.cuda.is_available() else "cpu"
dtype = torch.bfloat16 if device == "cuda" else torch.float32
batch, heads, seq_q, seq_kv, dim = 2, 8, 256, 384, 128
q = torch.randn(batch, heads, seq_q, dim, device=device, dtype=dtype)
k = torch.randn(batch, heads, seq_kv, dim, device=device, dtype=dtype)
v = torch.randn(batch, heads, seq_kv, dim, device=device, dtype=dtype)
slopes = sdpa_core.alibi_slopes(heads, device=device)

biases = {
    "no mask": (None, False),
    "is_causal": (None, True),
    "causal_lower_right": (sdpa_core.causal_lower_right(seq_q, seq_kv), False),
    "ALiBi + causal upper-left": (sdpa_core.AlibiBias(slopes, seq_q, seq_kv, causal=CausalVariant.UPPER_LEFT), False),
    "TensorBias (additive)": (sdpa_core.TensorBias(torch.randn(1, heads, seq_q, seq_kv, device=device, dtype=dtype)),
                              False),
}

print(f"sdpa_core {sdpa_core.__version__} on {device} ({torch.cuda.get_device_name() if device == 'cuda' else 'cpu'})")
for name, (bias, is_causal) in biases.items():
    out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=is_causal)
    dense = None if bias is None else bias.materialize(device)
    if dense is not None and dense.dtype != torch.bool:
        dense = dense.to(torch.float32)
    ref = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=dense,
                                                           is_causal=is_causal)
    err = (out.float() - ref).abs().max().item()
    path = sdpa_core.explain(q, k, v, attn_mask=bias, is_causal=is_causal).splitlines()
    print(f"\n{name}: max |sdpa_core - torch| = {err:.2e}  {'OK' if err < 3e-2 else 'MISMATCH'}")
    print("  " + "\n  ".join(path[1:]))
