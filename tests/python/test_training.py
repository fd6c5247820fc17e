"""Training through sdpa_core: a compiled training step for every built-in bias (CPU aot_eager in CI,
inductor on the GPU), activation checkpointing, and CUDA-graph capture of a training step. Gradients are
held to eager mode and, for the graph, to the float64 oracle."""

import pytest
import torch
from conftest import DEVICES, qkv, requires_cuda
from oracle import attention_fp64_grads
from test_compile import MODULES, Attention

import sdpa_core


def _step(module, q, k, v, slopes, dense, grad):
    out = module(q, k, v, slopes, dense)
    out.backward(grad)
    return out.detach(), [t.grad.detach().clone() for t in (q, k, v)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(MODULES))
def test_compiled_training_step_matches_eager(device, name):
    torch._dynamo.reset()
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    base = qkv(2, 4, 4, 33, 47, 64, device, dtype)
    slopes = sdpa_core.alibi_slopes(4, device=device)
    dense = torch.randn(1, 4, 33, 47, device=device).to(dtype)
    grad = torch.randn(2, 4, 33, 64, device=device).to(dtype)
    module = Attention(*MODULES[name])
    backend = "aot_eager" if device == "cpu" else "inductor"
    compiled = torch.compile(module, fullgraph=True, backend=backend)
    results = []
    for fn in (module, compiled):
        q, k, v = (t.clone().requires_grad_(True) for t in base)
        results.append(_step(fn, q, k, v, slopes, dense, grad))
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    for expected, got in zip([results[0][0], *results[0][1]], [results[1][0], *results[1][1]]):
        torch.testing.assert_close(got, expected, atol=tol, rtol=tol)


@pytest.mark.parametrize("device", DEVICES)
def test_activation_checkpointing_gives_the_same_gradients(device):
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    base = qkv(1, 4, 4, 65, 65, 64, device, dtype)
    bias = sdpa_core.AlibiBias(sdpa_core.alibi_slopes(4, device=device), 65, 65,
                               causal=sdpa_core.CausalVariant.UPPER_LEFT)

    def block(q, k, v):
        return sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=bias).square().sum()

    grads = []
    for checkpointed in (False, True):
        q, k, v = (t.clone().requires_grad_(True) for t in base)
        loss = torch.utils.checkpoint.checkpoint(block, q, k, v, use_reentrant=False) if checkpointed else block(q, k, v)
        loss.backward()
        grads.append([t.grad for t in (q, k, v)])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


@requires_cuda
def test_cuda_graph_captures_a_training_step():
    seq, heads, dim = 128, 4, 64
    slopes = sdpa_core.alibi_slopes(heads, device="cuda")
    bias = sdpa_core.AlibiBias(slopes, seq, seq, causal=sdpa_core.CausalVariant.UPPER_LEFT)
    q, k, v = (t.requires_grad_(True) for t in qkv(2, heads, heads, seq, seq, dim, "cuda", torch.bfloat16))
    grad = torch.randn(2, heads, seq, dim, device="cuda", dtype=torch.bfloat16)

    def step():
        for t in (q, k, v):
            t.grad = None
        sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=bias).backward(grad)

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # warm-up outside the capture, as CUDA graphs require
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    for t in (q, k, v):
        t.grad = None
    with torch.cuda.graph(graph):
        sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=bias).backward(grad)
    with torch.no_grad():
        q.copy_(torch.randn_like(q))
    graph.replay()
    torch.cuda.synchronize()
    _, want, _ = attention_fp64_grads(q, k, v, grad, slopes=slopes, causal="upper_left")
    for name, got in (("q", q.grad), ("k", k.grad), ("v", v.grad)):
        err = (got.double().cpu() - want[name]).abs().max().item()
        assert err < 0.05 * max(1.0, want[name].abs().max().item()), (name, err)
