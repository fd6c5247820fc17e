"""The fused backward's bias gradient on the GPU: a float dense bias that requires grad (a learned
relative-position bias) runs both fused passes in eager mode under the default dispatch policy "auto"
(explain() says "with the bias gradient"), and dq, dk, dv and the bias's gradient, summed to each broadcast
shape, match the float64 oracle with test_grad.py's tolerances; deterministic mode repeats bitwise; a bool
mask never asks for a gradient; under torch.compile such a call runs on torch. CPU side:
test_bias_grad.py."""

import pytest
import torch
from conftest import requires_cuda
from layouts import make_qkv
from oracle import attention_fp64_grads, attention_lowp_grads
from test_backward_gpu import _Spy, _fused_backward_ran
from test_grad import _assert_grad_close, _check_against_oracle

import sdpa_core
from sdpa_core import _kernels

pytestmark = requires_cuda

BATCH = 2
SIZES = [(17, 113), (113, 17), (113, 113)]

# name -> the bias's shape for (heads, Sq, Skv): every way a learned bias broadcasts
SHAPES = {
    "b_h_sq_skv": lambda h, sq, skv: (BATCH, h, sq, skv),
    "1_h_sq_skv": lambda h, sq, skv: (1, h, sq, skv),
    "h_sq_skv": lambda h, sq, skv: (h, sq, skv),
    "sq_skv": lambda h, sq, skv: (sq, skv),
    "b_1_1_skv": lambda h, sq, skv: (BATCH, 1, 1, skv),
}


def _learned_bias(shape, dtype):
    return torch.randn(shape, dtype=torch.float32).to(device="cuda", dtype=dtype).requires_grad_(True)


def _poison_next(shape, dtype):
    """Leave a freed NaN block of exactly this size in the caching allocator: the next allocation of the
    size (the backward's grad_bias buffer) reuses it, so an element the kernel leaves unwritten is NaN."""
    junk = torch.full(shape, float("nan"), device="cuda", dtype=dtype)
    del junk


def _train(shape_name, heads_q, heads_kv, seq_q, seq_kv, dim, dtype, is_causal):
    q, k, v = make_qkv(BATCH, heads_q, heads_kv, seq_q, seq_kv, dim, "contiguous", "cuda", dtype, requires_grad=True)
    bias = _learned_bias(SHAPES[shape_name](heads_q, seq_q, seq_kv), dtype)
    mask, gqa = sdpa_core.TensorBias(bias), heads_q != heads_kv
    context = f"bias {tuple(bias.shape)} Sq={seq_q} Skv={seq_kv} Hq={heads_q} Hkv={heads_kv} d{dim} {dtype} " \
              f"is_causal={is_causal}"
    text = sdpa_core.explain(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=gqa)
    assert "backward: fused kernel bwd_" in text and "(with the bias gradient)" in text, f"{text} ({context})"
    out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=gqa)
    assert _fused_backward_ran(out), context
    grad_out = torch.randn(out.shape, dtype=torch.float32).to(device="cuda", dtype=dtype)
    _poison_next((BATCH, heads_q, seq_q, seq_kv), dtype)
    grads = torch.autograd.grad(out, (q, k, v, bias), grad_out)
    assert grads[3].shape == bias.shape and grads[3].dtype == bias.dtype, context
    oracle_kwargs = {"dense": bias, "causal": "upper_left" if is_causal else None}
    _check_against_oracle(q, k, v, out, [q, k, v, bias], grads, grad_out, oracle_kwargs, dtype, context)
    return q, k, v, bias, grads


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("dim", [64, 128])
@pytest.mark.parametrize("is_causal", [False, True], ids=["no_causal", "is_causal"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_fused_bias_gradient_matches_oracle(shape, is_causal, dim, dtype):
    """Default policy ("auto"): on sm90 a dense bias without causal goes to torch for inference, but a call
    that trains the bias stays fused. GQA (4 query heads on 2 kv heads), odd sizes, Sq != Skv."""
    for seq_q, seq_kv in SIZES:
        _train(shape, 4, 2, seq_q, seq_kv, dim, dtype, is_causal)


@pytest.mark.parametrize("heads_q,heads_kv", [(8, 1), (6, 3), (4, 4)])
def test_bias_gradient_per_query_head_with_grouped_heads(heads_q, heads_kv):
    """The bias gradient is per query head even where several query heads share a kv head."""
    _train("1_h_sq_skv", heads_q, heads_kv, 65, 129, 64, torch.bfloat16, False)


def test_only_the_bias_requires_grad():
    """A learned bias alone makes a training call: both fused passes run, the bias gets the oracle's gradient."""
    q, k, v = make_qkv(BATCH, 4, 4, 33, 47, 128, "contiguous", "cuda", torch.bfloat16)
    bias = _learned_bias((4, 33, 47), torch.bfloat16)
    out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_core.TensorBias(bias))
    assert _fused_backward_ran(out)
    grad_out = torch.randn_like(out)
    (got,) = torch.autograd.grad(out, (bias,), grad_out)
    _, ref, _ = attention_fp64_grads(q, k, v, grad_out, dense=bias)
    lowp = attention_lowp_grads(q, k, v, grad_out, dense=bias)[1]
    _assert_grad_close("bias", got, ref["dense"], lowp["dense"], torch.bfloat16, "only the bias requires grad")


@pytest.mark.parametrize("shape", ["1_h_sq_skv", "b_1_1_skv"])
def test_deterministic_mode_gives_bitwise_equal_bias_gradients(shape):
    heads_q, heads_kv, seq_q, seq_kv = 8, 2, 300, 513
    q, k, v = make_qkv(BATCH, heads_q, heads_kv, seq_q, seq_kv, 128, "contiguous", "cuda", torch.bfloat16,
                       requires_grad=True)
    bias = _learned_bias(SHAPES[shape](heads_q, seq_q, seq_kv), torch.bfloat16)
    grad_out = torch.randn(BATCH, heads_q, seq_q, 128, device="cuda", dtype=torch.bfloat16)
    runs = []
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        text = sdpa_core.explain(q, k, v, attn_mask=sdpa_core.TensorBias(bias), enable_gqa=True)
        assert "(with the bias gradient) (deterministic" in text, text
        for _ in range(2):
            out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_core.TensorBias(bias), enable_gqa=True)
            assert _fused_backward_ran(out)
            runs.append(torch.autograd.grad(out, (q, k, v, bias), grad_out))
    finally:
        torch.use_deterministic_algorithms(False)
    for what, a, b in zip(("q", "k", "v", "bias"), *runs):
        assert torch.equal(a, b), f"d{what} differs between two deterministic runs ({shape})"


class _GradBiasSpy(_Spy):
    """_Spy that also records the grad_bias each backward call passed."""

    def __init__(self):
        super().__init__()
        self.grad_bias = []

    def __call__(self, *args, **kwargs):
        self.grad_bias.append(kwargs.get("grad_bias"))
        return super().__call__(*args, **kwargs)


@pytest.mark.parametrize("mask", ["bool", "fixed_float"])
def test_a_mask_without_grad_never_asks_for_a_bias_gradient(mask, monkeypatch):
    """A bool mask cannot have a gradient and a float one that does not require grad is not given one:
    the fused backward runs without grad_bias (libsdpa refuses grad_bias for a mask) and explain() says so."""
    spy = _GradBiasSpy()
    monkeypatch.setattr(_kernels, "try_backward", spy)
    q, k, v = make_qkv(BATCH, 4, 4, 65, 65, 64, "contiguous", "cuda", torch.bfloat16, requires_grad=True)
    dense = (torch.rand(BATCH, 1, 65, 65, device="cuda") > 0.2 if mask == "bool"
             else torch.randn(1, 4, 65, 65, device="cuda").bfloat16())
    with sdpa_core.dispatch_policy("own"):  # "auto" would send the fixed float bias to cuDNN on sm90
        text = sdpa_core.explain(q, k, v, attn_mask=sdpa_core.TensorBias(dense))
        out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_core.TensorBias(dense))
    assert "backward: fused kernel" in text and "bias gradient" not in text, text
    out.sum().backward()
    assert spy.ran == 1 and spy.grad_bias == [None]


def test_compiled_learned_bias_runs_on_torch_and_matches_eager(monkeypatch):
    """torch.compile(fullgraph=True): the custom ops carry no bias gradient, so the traced call is PyTorch's
    (the fused backward runs only in the eager pass); both give the bias the same gradient."""
    from test_compile import MODULES, Attention

    torch._dynamo.reset()
    base = [t.to("cuda", torch.bfloat16) for t in (torch.randn(2, 4, 33, 64), torch.randn(2, 4, 47, 64),
                                                   torch.randn(2, 4, 47, 64))]
    slopes, dense = sdpa_core.alibi_slopes(4, device="cuda"), torch.randn(1, 4, 33, 47, device="cuda").bfloat16()
    grad = torch.randn(2, 4, 33, 64, device="cuda", dtype=torch.bfloat16)
    module = Attention(*MODULES["tensor_bias"])
    spy = _Spy()
    monkeypatch.setattr(_kernels, "try_backward", spy)
    results = []
    for fn in (module, torch.compile(module, fullgraph=True)):
        q, k, v, b = (t.clone().requires_grad_(True) for t in (*base, dense))
        fn(q, k, v, slopes, b).backward(grad)
        results.append([t.grad for t in (q, k, v, b)])
    assert spy.ran == 1, f"the fused backward ran {spy.ran} times; expected once (eager only)"
    for what, eager, compiled in zip(("q", "k", "v", "bias"), *results):
        torch.testing.assert_close(compiled, eager, atol=3e-2, rtol=3e-2, msg=f"d{what}")
