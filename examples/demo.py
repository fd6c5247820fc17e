"""Which path each bias takes on this machine, and each result checked against a float64 reference.

The reference shares no code with sdpa_core or torch's SDPA: every mask and bias is built here by hand
from its definition, and attention is plain float64 matmul + softmax. A reference that reused the code
under test would reproduce its bugs.
"""

import math

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
dense_bias = torch.randn(1, heads, seq_q, seq_kv, device=device, dtype=dtype)

# Query row i, key column j, as float64 on the CPU; (Skv - Sq) shifts the diagonal to the lower right.
row = torch.arange(seq_q, dtype=torch.float64)[:, None]
col = torch.arange(seq_kv, dtype=torch.float64)[None, :]
upper_left = col <= row
lower_right = col <= row + (seq_kv - seq_q)
alibi = -slopes.double().cpu()[:, None, None] * (row + (seq_kv - seq_q) - col).abs()  # (H, Sq, Skv)


def reference(keep=None, additive=None):
    """float64 attention: softmax(q k^T * scale + additive, masked to `keep`) v."""
    q64, k64, v64 = (t.double().cpu() for t in (q, k, v))
    scores = q64 @ k64.transpose(-2, -1) / math.sqrt(dim)
    if additive is not None:
        scores = scores + additive
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v64


# name: (attn_mask, is_causal, reference output)
cases = {
    "no mask": (None, False, reference()),
    "is_causal": (None, True, reference(keep=upper_left)),
    "causal_lower_right": (sdpa_core.causal_lower_right(seq_q, seq_kv), False, reference(keep=lower_right)),
    "ALiBi + causal upper-left": (sdpa_core.AlibiBias(slopes, seq_q, seq_kv, causal=CausalVariant.UPPER_LEFT),
                                  False, reference(keep=upper_left, additive=alibi)),
    "TensorBias (additive)": (sdpa_core.TensorBias(dense_bias), False,
                              reference(additive=dense_bias.double().cpu())),
}
# bf16 keeps 8 bits of mantissa; outputs here are O(1).
tolerance = 3e-2 if dtype in (torch.bfloat16, torch.float16) else 1e-4

print(f"sdpa_core {sdpa_core.__version__} on {device} ({torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}), "
      f"{dtype}, reference: float64 built by hand")
failed = []
for name, (bias, is_causal, ref) in cases.items():
    out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=is_causal)
    err = (out.double().cpu() - ref).abs().max().item()
    if not err <= tolerance:
        failed.append(name)
    path = sdpa_core.explain(q, k, v, attn_mask=bias, is_causal=is_causal).splitlines()
    print(f"\n{name}: max |sdpa_core - float64 reference| = {err:.2e}  {'OK' if err <= tolerance else 'MISMATCH'}")
    print("  " + "\n  ".join(path[1:]))
if failed:
    raise SystemExit(f"\nmismatch against the float64 reference (tolerance {tolerance:g}): {', '.join(failed)}")
