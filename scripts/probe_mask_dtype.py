"""Probe: which torch backend takes a float32 mask with bf16 q/k/v on CUDA, and what it costs."""
import torch, torch.nn.functional as F, triton.testing as tt
from torch.nn.attention import sdpa_kernel, SDPBackend
B, H, S, D = 2, 16, 8192, 128
q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
slopes = torch.tensor([2.0 ** (-8.0 * (h + 1) / H) for h in range(H)], device="cuda")
i = torch.arange(S, device="cuda")
dist = (i[:, None] - i[None, :]).float()
m32 = (-slopes[:, None, None] * dist).masked_fill(dist < 0, float("-inf"))[None]
m16 = m32.to(torch.bfloat16)
g = torch.randn_like(q)
flops = 4 * B * H * S * S * D * 0.5
for name, m in (("bf16 mask", m16), ("fp32 mask", m32)):
    for backend in (None, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION):
        ctx = sdpa_kernel(backend) if backend else torch.autograd.graph.saved_tensors_hooks(lambda x: x, lambda x: x)
        try:
            with ctx:
                def fwd():
                    with torch.no_grad():
                        F.scaled_dot_product_attention(q, k, v, attn_mask=m)
                def fb():
                    F.scaled_dot_product_attention(q, k, v, attn_mask=m).backward(g)
                tf = tt.do_bench(fwd, warmup=25, rep=100)
                tb = tt.do_bench(fb, warmup=25, rep=100)
            print(f"{name} {backend}: fwd {flops/tf/1e9:.0f} TFLOP/s  fwd+bwd {3.5*flops/tb/1e9:.0f} TFLOP/s")
        except Exception as e:
            print(f"{name} {backend}: {type(e).__name__} {str(e)[:120]}")
