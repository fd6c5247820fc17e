"""What only a GPU can show: the fused kernels are chosen, write every output, capture in CUDA graphs,
never allocate an Sq x Skv tensor, and report why when they refuse."""

import pytest
import torch
from cases import BIASES
from conftest import qkv, requires_cuda
from oracle import assert_close, attention_fp64

import sdpa_core
from sdpa_core import _kernels
from sdpa_core._kernel_bias import KernelBias

pytestmark = requires_cuda


@pytest.fixture(autouse=True)
def _own_kernels():
    """These tests are about sdpa_core's kernels: pin dispatch to them (dispatch_policy "auto" may hand
    no-mask and causal calls to torch's faster kernel on sm90; test_routing_gpu below checks that)."""
    with sdpa_core.dispatch_policy("own"):
        yield

FUSED_BIASES = sorted(BIASES)


def _poison_allocator(nbytes):
    """Fill the caching allocator's next block with NaN so an unwritten output element shows up."""
    junk = torch.full((nbytes // 4 + 1024,), float("nan"), device="cuda")
    del junk


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("dim", [64, 128, 256])
@pytest.mark.parametrize("name", FUSED_BIASES)
def test_fused_kernel_runs_and_matches_oracle(name, dim, dtype):
    # (300, 512): bias and mask rows of 16-byte multiples, so dense biases take the shared-memory staged path
    for seq_q, seq_kv in [(1, 1), (17, 1000), (1000, 17), (113, 113), (257, 300), (300, 512)]:
        q, k, v = qkv(2, 4, 2, seq_q, seq_kv, dim, "cuda", dtype)
        mask, is_causal, oracle_kwargs = BIASES[name](2, 4, seq_q, seq_kv, "cuda", dtype)
        text = sdpa_core.explain(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=True)
        assert "fused kernel" in text, text
        _poison_allocator(q.numel() * q.element_size())
        out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=True)
        assert_close(out, attention_fp64(q, k, v, **oracle_kwargs), dtype)


def test_unsupported_head_dim_falls_back_with_reason():
    q, k, v = qkv(1, 2, 2, 64, 64, 80, "cuda", torch.bfloat16)
    text = sdpa_core.explain(q, k, v, is_causal=True)
    assert "PyTorch fallback" in text and "head_dim 80" in text, text
    assert_close(sdpa_core.scaled_dot_product_attention(q, k, v, is_causal=True),
                 attention_fp64(q, k, v, causal="upper_left"), torch.bfloat16)


def test_requires_grad_runs_the_fused_backward():
    q, k, v = qkv(1, 2, 2, 32, 32, 64, "cuda", torch.bfloat16)
    q.requires_grad_(True)
    text = sdpa_core.explain(q, k, v, is_causal=True)
    assert "path: fused kernel" in text and "backward: fused kernel bwd_" in text, text
    sdpa_core.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_cuda_graph_capture_and_replay():
    q, k, v = qkv(2, 4, 4, 300, 300, 128, "cuda", torch.bfloat16)
    slopes = sdpa_core.alibi_slopes(4, device="cuda")
    bias = sdpa_core.AlibiBias(slopes, 300, 300, causal=sdpa_core.CausalVariant.UPPER_LEFT)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    q.copy_(torch.randn_like(q))
    graph.replay()
    torch.cuda.synchronize()
    assert_close(out, attention_fp64(q, k, v, slopes=slopes, causal="upper_left"), torch.bfloat16)


@pytest.mark.parametrize("name", ["causal_lower_right", "alibi_upper_left", "is_causal"])
def test_no_seq_by_seq_allocation_at_16k(name):
    seq = 16384
    q, k, v = qkv(1, 4, 4, seq, seq, 128, "cuda", torch.bfloat16)
    mask, is_causal, _ = BIASES[name](1, 4, seq, seq, "cuda", torch.bfloat16)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
    torch.cuda.synchronize()
    grown = torch.cuda.max_memory_allocated() - before
    assert grown <= 2 * q.numel() * q.element_size(), f"peak grew by {grown} bytes: more than the output"


def test_tensors_past_2_31_elements():
    """64-bit offsets: query and output hold more than 2^31 elements (grouped heads keep K/V small)."""
    heads_q, seq, dim = 16400, 1024, 128
    q = torch.randn(1, heads_q, seq, dim, device="cuda", dtype=torch.bfloat16)
    assert q.numel() > 2**31
    k = torch.randn(1, 2, seq, dim, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(1, 2, seq, dim, device="cuda", dtype=torch.bfloat16)
    assert "fused kernel" in sdpa_core.explain(q, k, v, is_causal=True, enable_gqa=True)
    out = sdpa_core.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    last = slice(heads_q - 2, heads_q)  # the heads whose offsets overflow 32 bits; they read kv head 1
    assert_close(out[:, last], attention_fp64(q[:, last], k[:, 1:], v[:, 1:], causal="upper_left"), torch.bfloat16)


@pytest.mark.parametrize("name", sorted(BIASES))
def test_pytorch_fallback_on_cuda_matches_oracle(name, monkeypatch):
    """The fallback path on CUDA tensors, every bias: libsdpa is told to find no kernel."""
    monkeypatch.setattr(sdpa_core._kernels, "try_forward", lambda *args: None)
    for seq_q, seq_kv in [(1, 17), (113, 17), (17, 1000)]:
        q, k, v = qkv(2, 4, 2, seq_q, seq_kv, 64, "cuda", torch.bfloat16)
        mask, is_causal, oracle_kwargs = BIASES[name](2, 4, seq_q, seq_kv, "cuda", torch.bfloat16)
        out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=True)
        assert out.is_cuda
        assert_close(out, attention_fp64(q, k, v, **oracle_kwargs), torch.bfloat16)


def _is_sm90():
    return torch.cuda.get_device_capability()[0] == 9


@pytest.mark.parametrize("policy", ["auto", "own"])
@pytest.mark.parametrize("name", ["none", "is_causal", "dense_float", "alibi_upper_left", "causal_lower_right"])
def test_routing_gpu(name, policy):
    """Under "auto" on sm90 the calls torch runs faster go to torch (explain says so); under "own" every
    covered call runs the fused kernel. Both match the oracle."""
    q, k, v = qkv(2, 4, 4, 300, 300, 128, "cuda", torch.bfloat16)
    mask, is_causal, oracle_kwargs = BIASES[name](2, 4, 300, 300, "cuda", torch.bfloat16)
    with sdpa_core.dispatch_policy(policy):
        text = sdpa_core.explain(q, k, v, attn_mask=mask, is_causal=is_causal)
        out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
    # a dense bias, no mask and upper-left causal (hd128) stay fused on sm90 where the build has a Hopper
    # kernel for bf16 hd128 (they beat torch's default there)
    hopper = any(k.startswith("fwd_sm90<") and k.endswith(", bfloat16, hd128>") for k in sdpa_core._C.compiled_kernels())
    routed = policy == "auto" and _is_sm90() and name in ("none", "dense_float", "is_causal") and not hopper
    assert ("path: fused kernel" in text) == (not routed), text
    assert_close(out, attention_fp64(q, k, v, **oracle_kwargs), torch.bfloat16)


@pytest.mark.parametrize("mask", ["none", "lower_right", "alibi"])
def test_decode_shaped_calls_run_the_split_kv_kernel_under_auto(mask):
    """Sq <= 16 runs sdpa_core's split-KV decode kernel under "auto" too, with or without a mask (GQA)."""
    q, k, v = qkv(2, 8, 2, 3, 4096, 128, "cuda", torch.bfloat16)
    slopes = sdpa_core.alibi_slopes(8).cuda()
    bias = {"none": None, "lower_right": sdpa_core.causal_lower_right(3, 4096),
            "alibi": sdpa_core.AlibiBias(slopes, 3, 4096, causal=sdpa_core.CausalVariant.LOWER_RIGHT)}[mask]
    with sdpa_core.dispatch_policy("auto"):
        text = sdpa_core.explain(q, k, v, attn_mask=bias, enable_gqa=True)
        assert "decode_sm80" in text and "4 query heads per kv head packed with 3 queries into 12 rows" in text, text
        out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=True)
    kwargs = {"none": {}, "lower_right": {"causal": "lower_right"},
              "alibi": {"causal": "lower_right", "slopes": slopes}}[mask]
    assert_close(out, attention_fp64(q, k.repeat_interleave(4, 1), v.repeat_interleave(4, 1), **kwargs),
                 torch.bfloat16)


@pytest.mark.parametrize("num_splits", [1, 3])
def test_decode_is_deterministic_and_split_independent_of_batching(num_splits):
    """The same call twice gives the same bits; with one split a request's result does not depend on the
    batch around it (varlen_attn's num_splits=1)."""
    q, k, v = qkv(3, 8, 2, 1, 3000, 128, "cuda", torch.bfloat16)
    bias = sdpa_core.causal_lower_right(1, 3000)
    lower_right = KernelBias.causal_only(sdpa_core.CausalVariant.LOWER_RIGHT)
    run = lambda a, b, c, n: _kernels.try_forward(a, b, c, lower_right, 128 ** -0.5, num_splits=n)
    first, second = run(q, k, v, num_splits), run(q, k, v, num_splits)
    assert torch.equal(first, second)
    if num_splits == 1:
        alone = torch.cat([run(q[i:i + 1], k[i:i + 1], v[i:i + 1], 1) for i in range(3)])
        assert torch.equal(alone, first)
