"""A float dense bias that requires grad (a learned relative-position bias), without a GPU: the eager fused
autograd node takes it as an input, asks libsdpa for a backward that writes its gradient, sums that
(B, Hq, Sq, Skv) gradient down to the bias's shape, and autograd carries it to the user's tensor. libsdpa's
answers are monkeypatched and its kernels stand in as sdpa_core._math (test_backward_routing.py's
``fused`` fixture); gradients are held to the float64 oracle. Also: the 20-int binding layout, the routing
rule for bias-gradient calls, and the torch.compile refusal. The GPU side: test_bias_grad_gpu.py."""

import types

import pytest
import torch
import torch.nn.functional as F
from conftest import qkv
from layouts import make_qkv
from oracle import attention_fp64_grads
import test_backward_routing
from test_backward_routing import BWD, FWD, REL_TOL

import sdpa_core
from sdpa_core import _C, _autograd, _dispatch, _kernels, _routing
from sdpa_core._kernel_bias import KernelBias

fused = test_backward_routing.fused  # the fixture: libsdpa's answers and kernels stood in for on CPU

BATCH = 2

# name -> the bias's shape for (heads, Sq, Skv): every way a learned bias broadcasts
SHAPES = {
    "b_h_sq_skv": lambda h, sq, skv: (BATCH, h, sq, skv),
    "1_h_sq_skv": lambda h, sq, skv: (1, h, sq, skv),
    "h_sq_skv": lambda h, sq, skv: (h, sq, skv),
    "sq_skv": lambda h, sq, skv: (sq, skv),
    "b_1_1_skv": lambda h, sq, skv: (BATCH, 1, 1, skv),
}


def _fused_node_ran(out) -> bool:
    return isinstance(out.grad_fn, _autograd.FusedAttention._backward_cls)


def _assert_close_to(what, got, want, dtype):
    assert got is not None and got.shape == want.shape, f"{what}: {None if got is None else got.shape}"
    err = (got.detach().double() - want).abs().max().item()
    assert err <= REL_TOL[dtype] * max(1.0, want.abs().max().item()), f"{what}: max abs error {err:.3g}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seq_q,seq_kv", [(17, 113), (113, 17)])
@pytest.mark.parametrize("heads_q,heads_kv", [(4, 4), (4, 2)])
@pytest.mark.parametrize("is_causal", [False, True], ids=["no_causal", "is_causal"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_learned_bias_gets_the_oracle_gradient_through_the_fused_node(fused, shape, is_causal, heads_q, heads_kv,
                                                                      seq_q, seq_kv, dtype):
    q, k, v = make_qkv(BATCH, heads_q, heads_kv, seq_q, seq_kv, 64, "contiguous", "cpu", dtype, requires_grad=True)
    bias = torch.randn(SHAPES[shape](heads_q, seq_q, seq_kv), dtype=dtype, requires_grad=True)
    out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_core.TensorBias(bias), is_causal=is_causal,
                                                 enable_gqa=heads_q != heads_kv)
    assert _fused_node_ran(out), out.grad_fn
    grad_out = torch.randn(out.shape, dtype=dtype)
    grads = torch.autograd.grad(out, (q, k, v, bias), grad_out)
    assert fused.bias_grad_shapes == [(BATCH, heads_q, seq_q, seq_kv)]  # the full gradient, summed afterwards
    ref_out, ref, _ = attention_fp64_grads(q, k, v, grad_out, dense=bias, causal="upper_left" if is_causal else None)
    _assert_close_to("out", out, ref_out, dtype)
    for name, got in zip(("q", "k", "v", "dense"), grads):
        _assert_close_to(f"d{name} ({shape})", got, ref[name], dtype)
    assert grads[3].dtype == bias.dtype


def test_only_the_bias_requires_grad(fused):
    """A learned bias alone makes a training call: the fused node runs (its dq, dk, dv are discarded)."""
    q, k, v = qkv(BATCH, 4, 4, 17, 33, 64, dtype=torch.float64)
    bias = torch.randn(4, 17, 33, dtype=torch.float64, requires_grad=True)
    text = sdpa_core.explain(q, k, v, attn_mask=sdpa_core.TensorBias(bias))
    assert f"backward: fused kernel {BWD} (with the bias gradient)" in text, text
    out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_core.TensorBias(bias))
    assert _fused_node_ran(out)
    grad_out = torch.randn(out.shape, dtype=torch.float64)
    (got,) = torch.autograd.grad(out, (bias,), grad_out)
    _, ref, _ = attention_fp64_grads(q, k, v, grad_out, dense=bias)
    _assert_close_to("dbias", got, ref["dense"], torch.float64)


def test_gradient_reaches_a_parameter_through_a_gathered_bias(fused):
    """T5-style: the bias is a (non-contiguous) gather from a table of buckets; the table gets the gradient
    through ordinary autograd of the gather and permute."""
    heads, seq_q, seq_kv, buckets = 4, 17, 29, 8
    table = torch.randn(buckets, heads, dtype=torch.float64, requires_grad=True)
    relative = torch.arange(seq_kv).view(1, -1) - torch.arange(seq_q).view(-1, 1)
    index = relative.clamp(-buckets // 2, buckets // 2 - 1) + buckets // 2
    q, k, v = (t.requires_grad_(True) for t in qkv(BATCH, heads, heads, seq_q, seq_kv, 64, dtype=torch.float64))
    grad_out = torch.randn(BATCH, heads, seq_q, 64, dtype=torch.float64)
    bias = table[index].permute(2, 0, 1)  # (H, Sq, Skv)
    out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_core.TensorBias(bias))
    assert _fused_node_ran(out)
    got = torch.autograd.grad(out, (q, table), grad_out)
    want = torch.autograd.grad(F.scaled_dot_product_attention(q, k, v, table[index].permute(2, 0, 1)), (q, table),
                               grad_out)
    for name, a, b in zip(("dq", "dtable"), got, want):
        _assert_close_to(name, a, b, torch.float64)


def test_gradient_follows_the_5d_flattening_and_a_plain_tensor_mask(fused):
    """5-D inputs flatten to 4-D and the mask follows them (reshape, expand): autograd of those views sums
    the gradient back to the mask's own (3, H, Sq, Skv). A plain Tensor mask (deprecated) behaves the same."""
    q, k, v = (torch.randn(2, 3, 4, 9, 64, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = torch.randn(3, 4, 9, 9, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(2, 3, 4, 9, 64, dtype=torch.float64)
    with pytest.warns(FutureWarning):
        out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert fused.forward_calls == 1 and fused.bias_grad_shapes == []
    got = torch.autograd.grad(out, (q, mask), grad_out)
    assert fused.bias_grad_shapes == [(6, 4, 9, 9)]
    want = torch.autograd.grad(F.scaled_dot_product_attention(q, k, v, attn_mask=mask), (q, mask), grad_out)
    for name, a, b in zip(("dq", "dmask"), got, want):
        _assert_close_to(name, a, b, torch.float64)


@pytest.mark.parametrize("case", ["fixed_float", "bool_mask", "no_grad_mode"])
def test_no_bias_gradient_is_asked_for_unless_autograd_wants_one(fused, monkeypatch, case):
    """A bias that does not require grad, a bool mask (it never can), or grad mode off: no grad_bias buffer
    and libsdpa is asked for a plain backward."""
    asked = []
    monkeypatch.setattr(_kernels, "select_training", lambda *args: asked.append(args[-1]) or (FWD, BWD, ""))
    q, k, v = (t.requires_grad_(True) for t in qkv(BATCH, 4, 4, 9, 11, 64, dtype=torch.float64))
    dense = torch.rand(BATCH, 1, 9, 11) > 0.2 if case == "bool_mask" else torch.randn(9, 11, dtype=torch.float64)
    if case == "no_grad_mode":
        dense.requires_grad_(True)
        monkeypatch.setattr(_kernels, "try_forward", lambda q, k, v, bias, scale: torch.full_like(q, 7.0))
        with torch.no_grad():
            out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_core.TensorBias(dense))
        assert (out == 7.0).all() and asked == [] and fused.forward_calls == 0
        return
    out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_core.TensorBias(dense))
    assert _fused_node_ran(out)
    out.sum().backward()
    assert asked == [False] and fused.bias_grad_shapes == [None]
    assert "with the bias gradient" not in sdpa_core.explain(q, k, v, attn_mask=sdpa_core.TensorBias(dense))


def test_modifying_the_bias_in_place_before_the_backward_raises(fused):
    """The backward recomputes the probabilities from the bias: a changed bias must fail, not mislead."""
    q, k, v = (t.requires_grad_(True) for t in qkv(1, 2, 2, 9, 9, 64, dtype=torch.float64))
    bias = torch.randn(9, 9, dtype=torch.float64, requires_grad=True)
    out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_core.TensorBias(bias))
    with torch.no_grad():
        bias.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_deterministic_mode_and_the_bias_gradient_both_reach_explain_and_the_kernel(fused):
    q, k, v = (t.requires_grad_(True) for t in qkv(1, 2, 2, 9, 9, 64, dtype=torch.float64))
    bias = torch.randn(1, 2, 9, 9, dtype=torch.float64, requires_grad=True)
    try:
        torch.use_deterministic_algorithms(True)
        text = sdpa_core.explain(q, k, v, attn_mask=sdpa_core.TensorBias(bias), is_causal=True)
        sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_core.TensorBias(bias),
                                               is_causal=True).sum().backward()
    finally:
        torch.use_deterministic_algorithms(False)
    assert "(with the bias gradient) (deterministic" in text, text
    assert fused.backward_flags == [True] and fused.bias_grad_shapes == [(1, 2, 9, 9)]
    assert bias.grad is not None and bias.grad.abs().sum() > 0


def test_select_asks_libsdpa_about_the_layout_the_backward_writes(monkeypatch):
    """select_training hands libsdpa a grad_bias view with exactly empty_bias_grad()'s strides (so a layout
    the kernel refuses is refused before the forward runs), and the null view without a bias gradient."""
    seen = []
    monkeypatch.setattr(_C, "select_forward", lambda problem, scale, fields: (FWD, ""))
    monkeypatch.setattr(_C, "select_backward", lambda problem, scale, fields, grads, det: seen.append(grads) or
                        (BWD, ""))
    q, k, v = qkv(2, 4, 2, 17, 113, 64, dtype=torch.bfloat16)
    bias = KernelBias.dense_tensor(torch.randn(4, 17, 113, dtype=torch.bfloat16), None)
    assert _kernels.select_training(q, k, v, bias, 0.125, False, True) == (FWD, BWD, "")
    assert _kernels.select_backward(q, k, v, bias, 0.125, False, bias_grad=True) == (BWD, "")
    assert _kernels.select_training(q, k, v, bias, 0.125, False) == (FWD, BWD, "")
    written = _kernels.empty_bias_grad(q, k)
    assert written.shape == (2, 4, 17, 113) and written.dtype == q.dtype and written.is_contiguous()
    for grads in seen[:2]:
        assert len(grads) == _C.GRAD_FIELDS and grads[16] == q.data_ptr() and grads[17:] == list(written.stride()[:3])
    assert seen[2][16:] == [0, 0, 0, 0]


def test_the_real_binding_takes_a_bias_gradient_view():
    """The 20-int layout through the compiled binding: a dense bias with a grad_bias view is answered with a
    kernel or a reason (here no kernel is compiled for head dim 40), never a layout error."""
    q, k, v = qkv(1, 2, 1, 5, 7, 40, dtype=torch.bfloat16)
    dense = torch.randn(2, 5, 7, dtype=torch.bfloat16)
    bias = _kernels.bias_args(KernelBias.dense_tensor(dense, None), q, k)
    problem = _kernels.problem_args(q, k, v, q, torch.empty(1, 2, 5))
    grads = _kernels.grad_args(q, q, k, v, _kernels.empty_bias_grad(q, k))
    kernel, reason = _C.select_backward(problem, 0.125, bias, grads, False)
    assert kernel == "" and reason


def test_routing_sends_bias_gradient_calls_fused_under_auto(monkeypatch):
    """On sm90 a dense bias without causal goes to torch's cuDNN kernel under "auto" for prefill, unless the
    call trains the bias: torch has only its memory-efficient backend for that. Decode-shaped inference calls
    (Sq <= 16) stay on sdpa_core's split-KV kernel."""
    monkeypatch.setattr(_routing, "device_info", lambda device: (9, 132))
    q = torch.empty(1, 2, 40, 64)

    def dense_bias(requires_grad, causal=None):
        return KernelBias.dense_tensor(torch.zeros(40, 40, requires_grad=requires_grad), causal)

    with sdpa_core.dispatch_policy("auto"):
        assert "cuDNN" in _routing.torch_is_faster(q, dense_bias(False), training=False)
        assert "cuDNN" in _routing.torch_is_faster(q, dense_bias(False), training=True)  # the rule stays
        assert _routing.torch_is_faster(q, dense_bias(True), training=True) == ""
        assert _routing.torch_is_faster(q, dense_bias(True, sdpa_core.CausalVariant.UPPER_LEFT), training=True) == ""
        with torch.no_grad():  # no gradient will be computed: an inference call
            assert "cuDNN" in _routing.torch_is_faster(q, dense_bias(True), training=False)
        decode = torch.empty(1, 2, 16, 64)
        assert _routing.torch_is_faster(decode, dense_bias(False), training=False) == ""
        assert "cuDNN" in _routing.torch_is_faster(decode, dense_bias(False), training=True)
    with sdpa_core.dispatch_policy("own"):
        assert _routing.torch_is_faster(q, dense_bias(False), training=True) == ""


def test_routing_keeps_dense_bias_inference_on_the_hopper_kernel(monkeypatch):
    """Where libsdpa has a Hopper forward kernel for the call's dtype and head dim, a dense-bias inference call
    stays fused on sm90 (it beats torch's cuDNN there); training calls keep the torch rule, and so does a
    process that caps libsdpa's dispatch below sm90 (SDPA_MAX_ARCH)."""
    monkeypatch.setattr(_routing, "device_info", lambda device: (9, 132))
    monkeypatch.setattr(_routing, "_hopper_kernels", {})
    monkeypatch.setattr(_routing, "_C", types.SimpleNamespace(
        compiled_kernels=lambda: ["fwd_sm80<DenseBias, bfloat16, hd64>", "fwd_sm90<DenseBias, bfloat16, hd64>"]))
    monkeypatch.delenv("SDPA_MAX_ARCH", raising=False)
    dense = KernelBias.dense_tensor(torch.zeros(40, 40), None)
    with sdpa_core.dispatch_policy("auto"):
        assert _routing.torch_is_faster(torch.empty(1, 2, 40, 64, dtype=torch.bfloat16), dense, training=False) == ""
        assert "cuDNN" in _routing.torch_is_faster(torch.empty(1, 2, 40, 64, dtype=torch.bfloat16), dense,
                                                   training=True)
        assert "cuDNN" in _routing.torch_is_faster(torch.empty(1, 2, 40, 64, dtype=torch.float16), dense)
        assert "cuDNN" in _routing.torch_is_faster(torch.empty(1, 2, 40, 128, dtype=torch.bfloat16), dense)
        monkeypatch.setattr(_routing, "_hopper_kernels", {})
        monkeypatch.setenv("SDPA_MAX_ARCH", "80")
        assert "cuDNN" in _routing.torch_is_faster(torch.empty(1, 2, 40, 64, dtype=torch.bfloat16), dense)


def test_routing_keeps_measured_inference_wins_on_the_hopper_kernel(monkeypatch):
    """Inference calls where the Hopper forward was measured faster than torch's default (hd64, hd128 and hd256,
    with or without upper-left causal) stay fused on sm90 where a Hopper kernel is built for the dtype
    and head dim; training calls and builds without one go to torch."""
    monkeypatch.setattr(_routing, "device_info", lambda device: (9, 132))
    monkeypatch.setattr(_routing, "_hopper_kernels", {})
    monkeypatch.setattr(_routing, "_C", types.SimpleNamespace(
        compiled_kernels=lambda: ["fwd_sm90<CausalUpperLeft, bfloat16, hd128>", "fwd_sm90<NoBias, bfloat16, hd64>",
                                  "fwd_sm80<NoBias, bfloat16, hd256>"]))
    monkeypatch.delenv("SDPA_MAX_ARCH", raising=False)
    causal = KernelBias.causal_only(sdpa_core.CausalVariant.UPPER_LEFT)
    plain = KernelBias.causal_only(None)
    q128, q64 = torch.empty(1, 2, 40, 128, dtype=torch.bfloat16), torch.empty(1, 2, 40, 64, dtype=torch.bfloat16)
    q256 = torch.empty(1, 2, 40, 256, dtype=torch.bfloat16)
    with sdpa_core.dispatch_policy("auto"):
        assert _routing.torch_is_faster(q128, causal, training=False) == ""
        assert _routing.torch_is_faster(q128, plain, training=False) == ""
        assert _routing.torch_is_faster(q64, causal, training=False) == ""
        assert "cuDNN" in _routing.torch_is_faster(q128, causal, training=True)
        assert _routing.torch_is_faster(q64, plain, training=False) == ""
        assert "cuDNN" in _routing.torch_is_faster(q64, plain, training=True)
        assert "cuDNN" in _routing.torch_is_faster(q256, causal, training=False)  # only the sm80 kernel built
        assert "cuDNN" in _routing.torch_is_faster(q128.half(), causal, training=False)  # no fp16 Hopper kernel


def test_routing_keeps_lower_right_training_on_the_hopper_backward(monkeypatch):
    """Lower-right causal training goes to torch on sm90 unless libsdpa has the Hopper backward for the call's
    dtype and head dim (it beats torch's default there); a process capped below sm90 keeps the torch rule."""
    monkeypatch.setattr(_routing, "device_info", lambda device: (9, 132))
    monkeypatch.setattr(_routing, "_hopper_kernels", {})
    monkeypatch.setattr(_routing, "_C", types.SimpleNamespace(
        compiled_kernels=lambda: ["bwd_sm80<CausalLowerRight, bfloat16, hd64>", "bwd_sm90<CausalLowerRight, bfloat16, hd128>"]))
    monkeypatch.delenv("SDPA_MAX_ARCH", raising=False)
    lower_right = KernelBias.causal_only(sdpa_core.CausalVariant.LOWER_RIGHT)
    q128, q64 = torch.empty(1, 2, 40, 128, dtype=torch.bfloat16), torch.empty(1, 2, 40, 64, dtype=torch.bfloat16)
    with sdpa_core.dispatch_policy("auto"):
        assert _routing.torch_is_faster(q128, lower_right, training=True) == ""
        assert "lower-right causal training" in _routing.torch_is_faster(q64, lower_right, training=True)
        assert "lower-right causal training" in _routing.torch_is_faster(q128.half(), lower_right, training=True)
        monkeypatch.setattr(_routing, "_hopper_kernels", {})
        monkeypatch.setenv("SDPA_MAX_ARCH", "80")
        assert "lower-right causal training" in _routing.torch_is_faster(q128, lower_right, training=True)


def test_auto_dispatch_trains_the_bias_fused_and_the_fixed_bias_on_torch(fused, monkeypatch):
    monkeypatch.setattr(_routing, "device_info", lambda device: (9, 132))
    q, k, v = (t.requires_grad_(True) for t in qkv(1, 2, 2, 9, 9, 64, dtype=torch.float64))
    learned = torch.randn(2, 9, 9, dtype=torch.float64, requires_grad=True)
    with sdpa_core.dispatch_policy("auto"):
        assert _fused_node_ran(sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_core.TensorBias(learned)))
        fixed = sdpa_core.TensorBias(learned.detach())
        assert not _fused_node_ran(sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=fixed))
        assert "cuDNN kernel is faster" in sdpa_core.explain(q, k, v, attn_mask=fixed)
    assert fused.forward_calls == 1


def test_under_torch_compile_a_bias_that_requires_grad_is_refused_with_a_reason(monkeypatch):
    """The custom ops carry no bias gradient: while dynamo traces, fused_eligible and python_refusals both
    refuse a dense bias that requires grad, and agree on every other case too."""
    q, k, v = qkv(1, 2, 2, 8, 8, 16, dtype=torch.bfloat16)
    variants = {
        "dense_grad": KernelBias.dense_tensor(torch.zeros(8, 8, dtype=torch.bfloat16, requires_grad=True), None),
        "dense_fixed": KernelBias.dense_tensor(torch.zeros(8, 8, dtype=torch.bfloat16), None),
        "bool": KernelBias.dense_tensor(torch.ones(8, 8, dtype=torch.bool), None),
        "slopes_grad": KernelBias.alibi(torch.ones(2, requires_grad=True), None),
    }
    reason = "under torch.compile, a bias that requires grad runs on torch"
    for compiling in (False, True):
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: compiling)
        for name, bias in variants.items():
            for grad_mode in (True, False):
                with torch.set_grad_enabled(grad_mode):
                    reasons = _dispatch.python_refusals(q, k, v, bias, 0.0)
                    cuda_like = [r for r in reasons if not r.startswith("inputs are on")]  # the stand-in GPU
                    assert _dispatch.fused_eligible(q, k, v, bias, 0.0) == (not reasons), (name, compiling)
                    refused = any(r.startswith(reason) for r in cuda_like)
                    assert refused == (compiling and grad_mode and name == "dense_grad"), (name, compiling, reasons)
                    slopes_refused = any("slopes require grad" in r for r in cuda_like)
                    assert slopes_refused == (grad_mode and name == "slopes_grad"), (name, reasons)
