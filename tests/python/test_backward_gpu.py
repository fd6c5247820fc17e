"""The fused backward on the GPU: under dispatch_policy("own") every training call a kernel covers runs the
fused forward and backward (explain() and the autograd node say so), and dq, dk, dv match the float64
oracle for every bias, dtype and head dim, odd sizes, Sq < Skv and Sq > Skv, GQA, strided layouts and fully
masked rows. Also: deterministic mode, torch.compile(fullgraph=True) of a training step, checkpointing,
no Sq x Skv allocation at 16k. Tolerances are test_grad.py's (twice plain low-precision arithmetic's error
plus one rounding step of the largest value)."""

import pytest
import torch
from cases import BIASES
from conftest import requires_cuda
from layouts import LAYOUTS, describe, make_qkv
from oracle import attention_fp64_grads
from test_grad import _check_against_oracle

import sdpa_core
from sdpa_core import _autograd, _kernels, _routing

pytestmark = requires_cuda


@pytest.fixture(autouse=True)
def _own_kernels():
    """Pinned to sdpa_core's kernels: under "auto" the sm90 rule hands no-mask and causal calls to torch."""
    with sdpa_core.dispatch_policy("own"):
        yield


def _fused_backward_ran(out) -> bool:
    return isinstance(out.grad_fn, _autograd.FusedAttention._backward_cls)


def _train(name, batch, heads_q, heads_kv, seq_q, seq_kv, dim, dtype, layout="contiguous", expect_fused=True):
    """One forward + backward through sdpa_core, checked against the oracle; returns the gradients."""
    q, k, v = make_qkv(batch, heads_q, heads_kv, seq_q, seq_kv, dim, layout, "cuda", dtype, requires_grad=True)
    mask, is_causal, oracle_kwargs = BIASES[name](batch, heads_q, seq_q, seq_kv, "cuda", dtype)
    gqa = heads_q != heads_kv
    text = sdpa_core.explain(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=gqa)
    out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=gqa)
    context = f"bias={name} Sq={seq_q} Skv={seq_kv} d{dim} {dtype} {layout}; q {describe(q)}, k {describe(k)}"
    if expect_fused:
        assert "backward: fused kernel bwd_" in text and _fused_backward_ran(out), f"{text} ({context})"
    grad_out = torch.randn(out.shape, dtype=torch.float32).to(device="cuda", dtype=dtype)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    _check_against_oracle(q, k, v, out, [q, k, v], grads, grad_out, oracle_kwargs, dtype, context)
    return grads


SIZES = [(1, 1), (1, 17), (17, 113), (113, 17), (113, 113), (257, 300)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("dim", [64, 128, 256])
@pytest.mark.parametrize("name", sorted(BIASES))
def test_fused_backward_matches_oracle(name, dim, dtype):
    for seq_q, seq_kv in SIZES:
        _train(name, 2, 4, 2, seq_q, seq_kv, dim, dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", ["is_causal", "alibi_lower_right", "dense_float_broadcast", "dense_bool_is_causal"])
def test_fused_backward_strided_and_misaligned_layouts(name, layout):
    """(B, S, H, D) views, a packed QKV buffer, KV-cache slices, and layouts copied to aligned ones first;
    the buffers' unused elements are NaN, so a gradient that reads one shows it."""
    for seq_q, seq_kv in [(17, 113), (113, 17)]:
        _train(name, 2, 4, 2, seq_q, seq_kv, 128, torch.bfloat16, layout)


@pytest.mark.parametrize("heads_q,heads_kv", [(8, 1), (8, 2), (6, 3)])
def test_fused_backward_sums_each_query_head_group(heads_q, heads_kv):
    _train("alibi_upper_left", 2, heads_q, heads_kv, 113, 300, 64, torch.bfloat16, "bshd")


def test_single_kv_head_broadcasts_without_enable_gqa():
    q, k, v = make_qkv(2, 4, 1, 65, 65, 64, "contiguous", "cuda", torch.bfloat16, requires_grad=True)
    out = sdpa_core.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert _fused_backward_ran(out)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    _check_against_oracle(q, k, v, out, [q, k, v], grads, grad_out, {"causal": "upper_left"}, torch.bfloat16,
                          "one kv head, enable_gqa=False")


@pytest.mark.parametrize("how", ["lower_right_tall", "bool", "finfo_min"])
def test_fully_masked_rows_get_zero_gradients(how):
    """Rows with every key masked: output 0 and dq 0, and no NaN anywhere (their LSE is -inf)."""
    batch, heads, seq_q, seq_kv, dim = 2, 4, 40, 33, 64
    q, k, v = make_qkv(batch, heads, heads, seq_q, seq_kv, dim, "contiguous", "cuda", torch.bfloat16,
                       requires_grad=True)
    dead = [0, 5, seq_q - 1]
    if how == "lower_right_tall":  # Sq > Skv: the first Sq - Skv rows see no key
        mask, oracle_kwargs, dead = sdpa_core.causal_lower_right(seq_q, seq_kv), {"causal": "lower_right"}, [0, 6]
    else:
        keep = torch.ones(batch, 1, seq_q, seq_kv, dtype=torch.bool, device="cuda")
        keep[:, :, dead] = False
        dense = keep if how == "bool" else torch.zeros(keep.shape, device="cuda", dtype=torch.bfloat16).masked_fill(
            ~keep, torch.finfo(torch.bfloat16).min)
        mask, oracle_kwargs = sdpa_core.TensorBias(dense), {"dense": dense}
    out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert _fused_backward_ran(out)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    for name, g in zip("qkv", grads):
        assert torch.isfinite(g.float()).all(), f"d{name} has NaN or inf ({how})"
    assert not grads[0][:, :, dead].any() and not out.detach()[:, :, dead].any(), how
    _check_against_oracle(q, k, v, out, [q, k, v], grads, grad_out, oracle_kwargs, torch.bfloat16, how)


def test_expanded_grad_out_from_sum():
    """out.sum().backward() hands the backward an expanded gradient whose every stride is 0."""
    q, k, v = make_qkv(2, 4, 2, 113, 113, 128, "contiguous", "cuda", torch.bfloat16, requires_grad=True)
    slopes = sdpa_core.alibi_slopes(4, device="cuda")
    bias = sdpa_core.AlibiBias(slopes, 113, 113, causal=sdpa_core.CausalVariant.UPPER_LEFT)
    out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=True)
    assert _fused_backward_ran(out)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    oracle_kwargs = {"slopes": slopes, "causal": "upper_left"}
    _check_against_oracle(q, k, v, out, [q, k, v], grads, torch.ones_like(out), oracle_kwargs, torch.bfloat16,
                          "grad_out = ones, expanded")


def test_only_query_requires_grad():
    q, k, v = make_qkv(1, 4, 4, 65, 129, 64, "contiguous", "cuda", torch.float16)
    q.requires_grad_(True)
    out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_core.causal_lower_right(65, 129))
    assert _fused_backward_ran(out)
    grad_out = torch.randn_like(out)
    (dq,) = torch.autograd.grad(out, (q,), grad_out)
    _, want, _ = attention_fp64_grads(q, k, v, grad_out, causal="lower_right")
    err = (dq.double().cpu() - want["q"]).abs().max().item()
    assert err < 2e-2 * max(1.0, want["q"].abs().max().item()), err


@pytest.mark.parametrize("name", ["alibi_upper_left", "dense_float", "causal_lower_right", "none"])
def test_deterministic_mode_gives_bitwise_equal_gradients(name):
    q, k, v = make_qkv(2, 8, 2, 300, 513, 128, "contiguous", "cuda", torch.bfloat16, requires_grad=True)
    mask, is_causal, _ = BIASES[name](2, 8, 300, 513, "cuda", torch.bfloat16)
    grad_out = torch.randn(2, 8, 300, 128, device="cuda", dtype=torch.bfloat16)
    runs = []
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        text = sdpa_core.explain(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=True)
        assert "backward: fused kernel" in text and "deterministic" in text, text
        for _ in range(2):
            out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=True)
            runs.append(torch.autograd.grad(out, (q, k, v), grad_out))
    finally:
        torch.use_deterministic_algorithms(False)
    for what, a, b in zip("qkv", *runs):
        assert torch.equal(a, b), f"d{what} differs between two deterministic runs ({name})"


class _Spy:
    """Wraps _kernels.try_backward and counts the calls the fused kernel ran."""

    def __init__(self):
        self.real, self.ran = _kernels.try_backward, 0

    def __call__(self, *args, **kwargs):
        result = self.real(*args, **kwargs)
        self.ran += result is not None
        return result


@pytest.mark.parametrize("name", ["is_causal", "causal_lower_right", "alibi_lower_right", "alibi_is_causal",
                                  "tensor_bias"])
def test_compiled_training_step_runs_the_fused_backward(name, monkeypatch):
    """torch.compile(fullgraph=True, inductor) of forward + backward: the custom ops run the fused kernels
    (the spy sees the backward kernel run), and the gradients equal eager mode's, which run them too."""
    from test_compile import MODULES, Attention

    torch._dynamo.reset()
    base = [t.to("cuda", torch.bfloat16) for t in (torch.randn(2, 4, 33, 64), torch.randn(2, 4, 47, 64),
                                                   torch.randn(2, 4, 47, 64))]
    slopes, dense = sdpa_core.alibi_slopes(4, device="cuda"), torch.randn(1, 4, 33, 47, device="cuda").bfloat16()
    grad = torch.randn(2, 4, 33, 64, device="cuda", dtype=torch.bfloat16)
    module = Attention(*MODULES[name])
    results = []
    spy = _Spy()
    monkeypatch.setattr(_kernels, "try_backward", spy)
    for fn in (module, torch.compile(module, fullgraph=True)):
        q, k, v = (t.clone().requires_grad_(True) for t in base)
        fn(q, k, v, slopes, dense).backward(grad)
        results.append([t.grad for t in (q, k, v)])
    assert spy.ran == 2, f"the fused backward ran {spy.ran} times of 2 (eager, compiled)"
    for what, eager, compiled in zip("qkv", *results):
        torch.testing.assert_close(compiled, eager, atol=3e-2, rtol=3e-2, msg=f"d{what} ({name})")


def test_checkpointing_reruns_the_fused_forward_and_gives_the_same_gradients(monkeypatch):
    spy = _Spy()
    monkeypatch.setattr(_kernels, "try_backward", spy)
    base = make_qkv(1, 4, 4, 129, 129, 128, "contiguous", "cuda", torch.bfloat16)
    bias = sdpa_core.AlibiBias(sdpa_core.alibi_slopes(4, device="cuda"), 129, 129,
                               causal=sdpa_core.CausalVariant.UPPER_LEFT)

    def block(q, k, v):
        return sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=bias).float().square().sum()

    grads = []
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        for checkpointed in (False, True):
            q, k, v = (t.clone().requires_grad_(True) for t in base)
            if checkpointed:
                loss = torch.utils.checkpoint.checkpoint(block, q, k, v, use_reentrant=False)
            else:
                loss = block(q, k, v)
            loss.backward()
            grads.append([t.grad for t in (q, k, v)])
    finally:
        torch.use_deterministic_algorithms(False)
    assert spy.ran == 2
    for what, a, b in zip("qkv", *grads):
        assert torch.equal(a, b), f"d{what}: checkpointed and plain gradients differ"


def _is_sm90():
    return torch.cuda.get_device_capability()[0] == 9


@pytest.mark.parametrize("name", ["none", "is_causal", "dense_float", "alibi_upper_left", "causal_lower_right"])
def test_auto_routes_training_calls_like_inference(name):
    """Under "auto" a training call goes where the forward would: torch on sm90 for no mask, upper-left causal
    and a dense bias without causal (both passes), and also lower-right causal where libsdpa has no Hopper
    backward for the call (torch's backward is faster than the sm80 one), the fused kernels otherwise."""
    q, k, v = make_qkv(2, 4, 4, 300, 300, 128, "contiguous", "cuda", torch.bfloat16, requires_grad=True)
    mask, is_causal, oracle_kwargs = BIASES[name](2, 4, 300, 300, "cuda", torch.bfloat16)
    with sdpa_core.dispatch_policy("auto"):
        text = sdpa_core.explain(q, k, v, attn_mask=mask, is_causal=is_causal)
        out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
    routed = _is_sm90() and (name in ("none", "is_causal", "dense_float") or
                             name == "causal_lower_right" and not _routing._hopper_kernel(q, "bwd_sm90"))
    assert ("backward: fused kernel" in text) == (not routed), text
    assert ("backward: PyTorch autograd" in text) == routed, text
    assert _fused_backward_ran(out) == (not routed)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    _check_against_oracle(q, k, v, out, [q, k, v], grads, grad_out, oracle_kwargs, torch.bfloat16, f"auto, {name}")


def test_alibi_slopes_that_require_grad_run_on_torch_and_get_their_gradient():
    """No fused slope gradient: ALiBi slopes that require grad keep the call on torch, whose autograd gives
    them their gradient (checked against float32 torch on the CPU). A dense bias's gradient is fused:
    test_bias_grad_gpu.py."""
    q, k, v = make_qkv(1, 4, 4, 65, 65, 64, "contiguous", "cuda", torch.bfloat16, requires_grad=True)
    leaf = sdpa_core.alibi_slopes(4, device="cuda").requires_grad_(True)
    bias = sdpa_core.AlibiBias(leaf, 65, 65, causal=sdpa_core.CausalVariant.UPPER_LEFT)
    text = sdpa_core.explain(q, k, v, attn_mask=bias)
    assert "slopes require grad" in text and "backward: PyTorch autograd" in text, text
    out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    assert not _fused_backward_ran(out)
    grad_out = torch.randn_like(out)
    (got,) = torch.autograd.grad(out, (leaf,), grad_out)
    cpu = [t.detach().float().cpu().requires_grad_(True) for t in (q, k, v, leaf)]
    cpu_bias = sdpa_core.AlibiBias(cpu[3], 65, 65, causal=sdpa_core.CausalVariant.UPPER_LEFT)
    cpu_out = sdpa_core.scaled_dot_product_attention(*cpu[:3], attn_mask=cpu_bias)
    (want,) = torch.autograd.grad(cpu_out, (cpu[3],), grad_out.float().cpu())
    assert got.shape == leaf.shape and torch.isfinite(got.float()).all()
    err = (got.float().cpu() - want).abs().max().item()
    assert err <= 3e-2 * max(1.0, want.abs().max().item()), f"dslopes: {err:.3g}"


@pytest.mark.parametrize("name", ["is_causal", "alibi_upper_left", "causal_lower_right"])
def test_training_at_16k_allocates_nothing_seq_by_seq(name):
    """Forward + backward at S = 16k: the peak grows by the gradients, the LSE and the dQ workspace, never by
    an H x S x S matrix (here 2 GiB in bf16)."""
    seq = 16384
    q, k, v = make_qkv(1, 4, 4, seq, seq, 128, "contiguous", "cuda", torch.bfloat16, requires_grad=True)
    mask, is_causal, _ = BIASES[name](1, 4, seq, seq, "cuda", torch.bfloat16)
    grad_out = torch.randn_like(q)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
    assert _fused_backward_ran(out)
    torch.autograd.grad(out, (q, k, v), grad_out)
    torch.cuda.synchronize()
    grown = torch.cuda.max_memory_allocated() - before
    assert grown <= 12 * q.numel() * q.element_size(), f"peak grew by {grown} bytes"
