"""Training calls without a GPU: where the dispatcher sends them, what explain() says, and the eager autograd
node's plumbing. libsdpa's answers are monkeypatched (the CPU build has no kernels), and the kernels stand in
as sdpa_core._math, the plain-torch statement of their contract (forward with LSE, backward from it), which
the custom ops also fall back to; the gradients are held to the float64 oracle."""

import pytest
import torch
from cases import BIASES
from conftest import qkv
from layouts import make_qkv
from oracle import attention_fp64_grads

import sdpa_core
from sdpa_core import _C, _autograd, _dispatch, _kernels, _math, _routing

FWD, BWD = "fwd_sm80<Test, bfloat16, hd64>", "bwd_sm80<Test, bfloat16, hd64>"


class Kernels:
    """Stand-ins for libsdpa's kernels on CPU tensors, recording what they were asked."""

    def __init__(self, backward_runs=True):
        self.forward_calls, self.backward_flags, self.backward_runs = 0, [], backward_runs
        self.bias_grad_shapes = []  # per backward call: the shape of the grad_bias buffer asked for, or None

    def try_forward_lse(self, query, key, value, bias, scale, out=None):
        self.forward_calls += 1
        return _math.forward_lse(query, key, value, bias, scale)

    def try_backward(self, query, key, value, out, lse, grad_out, bias, scale, deterministic, grads=None,
                     grad_bias=None):
        self.backward_flags.append(deterministic)
        self.bias_grad_shapes.append(None if grad_bias is None else tuple(grad_bias.shape))
        if not self.backward_runs:
            return None
        return _math.backward(grad_out, query, key, value, out, lse, bias, scale, grad_bias=grad_bias)


def _cpu_refusals(real):
    """python_refusals without the two this machine cannot avoid (CPU inputs, float32)."""
    def refusals(*args):
        return [r for r in real(*args) if not r.startswith(("inputs are on", "fused kernels read"))]
    return refusals


@pytest.fixture
def fused(monkeypatch):
    """The dispatcher as on a GPU whose libsdpa runs both passes of every call: returns the stand-in kernels.
    Policy "own", so that the sm90 rule (which would ask for device properties) does not apply."""
    kernels = Kernels()
    monkeypatch.setattr(_dispatch, "python_refusals", _cpu_refusals(_dispatch.python_refusals))
    monkeypatch.setattr(_dispatch, "fused_eligible", lambda *args: not _dispatch.python_refusals(*args))
    monkeypatch.setattr(_kernels, "select_training", lambda *args: (FWD, BWD, ""))
    monkeypatch.setattr(_kernels, "select", lambda *args: (FWD, ""))
    monkeypatch.setattr(_kernels, "select_backward", lambda *args, **kwargs: ("", "the stand-in refuses"))
    monkeypatch.setattr(_kernels, "try_forward_lse", kernels.try_forward_lse)
    monkeypatch.setattr(_kernels, "try_backward", kernels.try_backward)
    with sdpa_core.dispatch_policy("own"):
        yield kernels


# x max(1, max |reference|). float64 as well is held to ~float32 rounding: the LSE the backward reads is float32
# by the kernels' contract.
REL_TOL = {torch.float64: 1e-6, torch.float32: 1e-4}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seq_q,seq_kv", [(1, 17), (17, 113), (113, 17)])
@pytest.mark.parametrize("heads_q,heads_kv,layout", [(3, 3, "contiguous"), (4, 2, "bshd"), (4, 1, "packed")])
@pytest.mark.parametrize("name", sorted(BIASES))
def test_fused_autograd_node_gives_the_oracle_gradients(fused, name, heads_q, heads_kv, layout, seq_q, seq_kv, dtype):
    """Through the autograd node, with the kernels' contract computed in plain torch: every bias, GQA (dk and
    dv per kv head), strided layouts, Sq < Skv and Sq > Skv, rows with every key masked (dense_bool)."""
    q, k, v = make_qkv(2, heads_q, heads_kv, seq_q, seq_kv, 64, layout, "cpu", dtype, requires_grad=True)
    mask, is_causal, oracle_kwargs = BIASES[name](2, heads_q, seq_q, seq_kv, "cpu", dtype)
    out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                                 enable_gqa=heads_q != heads_kv)
    assert isinstance(out.grad_fn, _autograd.FusedAttention._backward_cls), out.grad_fn
    grad_out = torch.randn(out.shape, dtype=dtype)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    ref_out, ref, dead = attention_fp64_grads(q, k, v, grad_out, **oracle_kwargs)
    assert fused.forward_calls == 1 and fused.backward_flags == [False]
    for what, got, want in (("out", out, ref_out), *zip(("dq", "dk", "dv"), grads, (ref["q"], ref["k"], ref["v"]))):
        assert got.shape == want.shape, what
        err = (got.detach().double() - want).abs().max().item()
        assert err <= REL_TOL[dtype] * max(1.0, want.abs().max().item()), f"{what}: {err:.3g} ({name})"
    if dead.any():
        rows = dead.expand(2, heads_q, seq_q, 1).squeeze(-1)
        assert not grads[0][rows].any() and not out.detach()[rows].any(), "masked rows: zero output and dq"


def test_deterministic_mode_reaches_the_backward_kernel(fused):
    q, k, v = (t.requires_grad_(True) for t in qkv(1, 2, 2, 9, 9, 64))
    try:
        torch.use_deterministic_algorithms(True)
        sdpa_core.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
    finally:
        torch.use_deterministic_algorithms(False)
    assert fused.backward_flags == [True]


def test_backward_refusal_raises_instead_of_returning_other_gradients(fused):
    fused.backward_runs = False
    q, k, v = (t.requires_grad_(True) for t in qkv(1, 2, 2, 9, 9, 64))
    out = sdpa_core.scaled_dot_product_attention(q, k, v, is_causal=True)
    with pytest.raises(RuntimeError, match="fused backward kernel refused.*the stand-in refuses"):
        out.sum().backward()


def test_calls_without_grad_keep_the_forward_kernel(fused, monkeypatch):
    monkeypatch.setattr(_kernels, "try_forward", lambda q, k, v, bias, scale: torch.full_like(q, 7.0))
    q, k, v = qkv(1, 2, 2, 9, 9, 64)
    assert (sdpa_core.scaled_dot_product_attention(q, k, v, is_causal=True) == 7.0).all()
    with torch.no_grad():
        q.requires_grad_(True)
        assert (sdpa_core.scaled_dot_product_attention(q, k, v, is_causal=True) == 7.0).all()
    assert fused.forward_calls == 0


def test_missing_backward_kernel_keeps_the_whole_call_on_torch(fused, monkeypatch):
    monkeypatch.setattr(_kernels, "select_training", lambda *args: (FWD, "", "no bwd kernel for hd64"))
    q, k, v = (t.requires_grad_(True) for t in qkv(1, 2, 2, 9, 9, 64))
    out = sdpa_core.scaled_dot_product_attention(q, k, v, is_causal=True)
    out.sum().backward()
    assert fused.forward_calls == 0 and q.grad is not None
    text = sdpa_core.explain(q, k, v, is_causal=True)
    assert "path: PyTorch fallback" in text and "no fused backward for this call (no bwd kernel for hd64)" in text
    assert "backward: PyTorch autograd" in text, text


def test_alibi_slopes_that_require_grad_run_on_torch_and_get_their_gradient(fused):
    """No kernel computes a slope gradient (a dense bias's: test_bias_grad.py)."""
    q, k, v = (t.requires_grad_(True) for t in qkv(1, 2, 2, 9, 11, 64, dtype=torch.float64))
    leaf = torch.tensor([0.3, 0.7], requires_grad=True)
    mask = sdpa_core.AlibiBias(leaf, 9, 11)
    i, j = torch.arange(9).view(-1, 1), torch.arange(11).view(1, -1)
    reference = -leaf.double()[:, None, None] * (i + 2 - j).abs()
    text = sdpa_core.explain(q, k, v, attn_mask=mask)
    assert "slopes require grad: the fused backward computes no bias gradient" in text, text
    assert "backward: PyTorch autograd" in text
    out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert fused.forward_calls == 0
    (got,) = torch.autograd.grad(out.sum(), (leaf,))
    (want,) = torch.autograd.grad(torch.nn.functional.scaled_dot_product_attention(q, k, v, reference).sum(), (leaf,))
    torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-9)


def test_explain_reports_both_fused_passes(fused):
    q, k, v = (t.requires_grad_(True) for t in qkv(1, 2, 2, 9, 9, 64))
    text = sdpa_core.explain(q, k, v, is_causal=True)
    assert f"path: fused kernel {FWD}" in text and f"backward: fused kernel {BWD}" in text, text
    try:
        torch.use_deterministic_algorithms(True)
        assert "deterministic" in sdpa_core.explain(q, k, v, is_causal=True)
    finally:
        torch.use_deterministic_algorithms(False)
    assert "backward" not in sdpa_core.explain(q.detach(), k.detach(), v.detach(), is_causal=True)


def test_torch_faster_sends_the_training_call_to_torch(fused, monkeypatch):
    """The routing rule applies to training calls: both passes go to torch, and explain() says why."""
    monkeypatch.setattr(_routing, "torch_is_faster", lambda query, bias, training=False: "torch is faster here (test)")
    q, k, v = (t.requires_grad_(True) for t in qkv(1, 2, 2, 9, 9, 64))
    sdpa_core.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
    assert fused.forward_calls == 0 and q.grad is not None
    text = sdpa_core.explain(q, k, v, is_causal=True)
    assert "torch is faster here (test)" in text and "backward: PyTorch autograd" in text, text


def test_explain_on_cpu_reports_the_torch_backward():
    q, k, v = (t.requires_grad_(True) for t in qkv(1, 2, 2, 8, 8, 64))
    text = sdpa_core.explain(q, k, v, is_causal=True)
    assert "PyTorch fallback" in text and "backward: PyTorch autograd" in text, text
    assert "require grad" not in text  # gradients alone no longer refuse the fused kernels


def test_binding_contract_for_the_backward():
    """grads: grad_o, grad_q, grad_k, grad_v, grad_bias, each (pointer, batch, head, seq strides); a grad_bias
    of None is the null view (pointer 0: no bias gradient)."""
    assert _C.GRAD_FIELDS == _kernels._CONTRACT["GRAD_FIELDS"] == 20
    q, k, v = qkv(1, 2, 1, 5, 7, 64)
    lse = torch.empty(1, 2, 5)
    problem = _kernels.problem_args(q, k, v, q, lse)
    assert len(problem) == _C.PROBLEM_FIELDS and problem[23] == lse.data_ptr()
    grads = _kernels.grad_args(q, q, k, v.transpose(2, 3))
    assert len(grads) == _C.GRAD_FIELDS and grads[12:16] == [v.data_ptr(), *v.transpose(2, 3).stride()[:3]]
    assert grads[16:] == [0, 0, 0, 0]
    grad_bias = torch.empty(1, 2, 5, 16)[..., :7]  # a row stride of 16 elements
    grads = _kernels.grad_args(q, q, k, v, grad_bias)
    assert len(grads) == _C.GRAD_FIELDS and grads[16:] == [grad_bias.data_ptr(), 2 * 5 * 16, 5 * 16, 16]


def test_binding_backward_returns_reasons_and_raises_on_broken_preconditions():
    """Like forward: a call no kernel covers (head_dim 40: none is compiled, on CPU or GPU builds) answers
    with the reason, a broken precondition raises."""
    q, k, v = qkv(1, 2, 1, 5, 7, 40, dtype=torch.bfloat16)
    lse = torch.empty(1, 2, 5)
    problem = _kernels.problem_args(q, k, v, q, lse)
    bias = _kernels.bias_args(_dispatch.KernelBias.causal_only(None), q, k)
    grads = _kernels.grad_args(q, q, k, v)
    kernel, reason = _C.select_backward(problem, 0.125, bias, grads, False)
    assert kernel == "" and reason
    if not _C.built_with_cuda():
        assert _C.backward(problem, 0.125, bias, grads, False, 0, 0) == reason
        assert _C.backward_workspace_size(problem, 0.125, bias, grads, False) == 0
    no_lse = problem[:23] + [0, *problem[24:]]
    assert "lse" in _C.select_backward(no_lse, 0.125, bias, grads, False)[1]
    with pytest.raises(ValueError, match="lse"):
        _C.backward(no_lse, 0.125, bias, grads, False, 0, 0)
    with pytest.raises(ValueError, match="grads"):
        _C.select_backward(problem, 0.125, bias, grads[:-1], False)
    with pytest.raises(ValueError, match="grads"):  # the layout before grad_bias
        _C.select_backward(problem, 0.125, bias, grads[:16], False)
