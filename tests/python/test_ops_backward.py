"""The training custom ops (sdpa_core::attention_fwd_lse with its registered autograd, sdpa_core::attention_bwd)
on CPU, where their bodies run the plain-torch contract (sdpa_core._math): opcheck, values against torch, a
compiled training step routed through them, and the trace-time coverage check under dynamic shapes."""

import types

import pytest
import torch
import torch.nn.functional as F
from conftest import qkv

import sdpa_core
from sdpa_core import CausalVariant, _compiled, _dispatch, _kernels, _math, _ops

# name -> (bias_kind, causal, slopes, dense, torch's attn_mask for the same bias) for Sq = 9, Skv = 13, 2 heads
_I, _J = torch.arange(9).view(-1, 1), torch.arange(13).view(1, -1)
_SLOPES = torch.tensor([0.25, 0.5])
_KEEP = torch.rand(1, 2, 9, 13, generator=torch.Generator().manual_seed(0)) > 0.3
_KEEP[:, :, 4] = False  # one row with every key masked: output and gradients 0
OP_BIASES = {
    "none": (0, 0, None, None, None),
    "causal_lower_right": (0, int(CausalVariant.LOWER_RIGHT), None, None, _J <= _I + 4),
    "alibi_upper_left": (1, int(CausalVariant.UPPER_LEFT), _SLOPES, None,
                         (-_SLOPES[:, None, None] * (_I + 4 - _J).abs()).masked_fill(_J > _I, float("-inf"))),
    "dense_bool": (2, 0, None, _KEEP, _KEEP),
}


def _inputs(heads_kv=2, requires_grad=False):
    q, k, v = qkv(2, 2, heads_kv, 9, 13, 64)
    return [t.requires_grad_(requires_grad) for t in (q, k, v)]


def _torch_reference(q, k, v, mask, grad_out):
    """torch's output and (dq, dk, dv), with fully masked rows zeroed as sdpa_core defines them."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    out = F.scaled_dot_product_attention(*leaves, attn_mask=mask, scale=0.125, enable_gqa=True).nan_to_num(0.0)
    return out.detach(), torch.autograd.grad(out, leaves, grad_out)


@pytest.mark.parametrize("heads_kv", [2, 1])
@pytest.mark.parametrize("name", sorted(OP_BIASES))
def test_training_ops_pass_opcheck_and_match_torch(name, heads_kv):
    kind, causal, slopes, dense, mask = OP_BIASES[name]
    q, k, v = _inputs(heads_kv, requires_grad=True)
    torch.library.opcheck(_ops.attention_fwd_lse, (q, k, v, kind, causal, slopes, dense, 0.125))
    out, lse = _ops.attention_fwd_lse(q, k, v, kind, causal, slopes, dense, 0.125)
    assert lse.shape == (2, 2, 9) and lse.dtype == torch.float32 and out.is_contiguous()
    grad_out = torch.randn_like(out)
    want_out, want_grads = _torch_reference(q, k, v, mask, grad_out)
    torch.testing.assert_close(out.detach(), want_out, atol=1e-5, rtol=1e-5)
    if name == "dense_bool":
        assert torch.isneginf(lse[:, :, 4]).all(), "a row with every key masked has LSE -inf"
    bwd_args = (grad_out, q.detach(), k.detach(), v.detach(), out.detach(), lse.detach(), kind, causal, slopes, dense,
                0.125, False)
    torch.library.opcheck(_ops.attention_bwd, bwd_args)
    for what, got, want in zip("qkv", _ops.attention_bwd(*bwd_args), want_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=f"d{what} ({name})")
    # the registered autograd: the forward op's backward is attention_bwd
    for what, got, want in zip("qkv", torch.autograd.grad(out, (q, k, v), grad_out), want_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=f"autograd d{what} ({name})")


class Counting:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args):
        self.calls += 1
        return self.fn(*args)


@pytest.mark.parametrize("name", ["is_causal", "alibi_lower_right", "tensor_bias"])
def test_compiled_training_step_runs_the_training_ops(name, monkeypatch):
    """torch.compile(fullgraph=True) of forward + backward with the dispatcher told that a GPU's libsdpa covers
    the call: the graph holds attention_fwd_lse and, through its registered autograd, attention_bwd (their
    CPU bodies run _math, counted here), and the gradients equal eager PyTorch's."""
    from test_compile import MODULES, Attention

    torch._dynamo.reset()
    base = qkv(2, 4, 4, 33, 47, 64)
    slopes, dense = sdpa_core.alibi_slopes(4), torch.randn(1, 4, 33, 47)
    grad = torch.randn(2, 4, 33, 64)
    module = Attention(*MODULES[name])
    q, k, v = (t.clone().requires_grad_(True) for t in base)
    module(q, k, v, slopes, dense).backward(grad)
    expected = [t.grad for t in (q, k, v)]

    forward, backward = Counting(_math.forward_lse), Counting(_math.backward)
    monkeypatch.setattr(_math, "forward_lse", forward)
    monkeypatch.setattr(_math, "backward", backward)
    monkeypatch.setattr(_dispatch, "fused_eligible", lambda *args: True)
    monkeypatch.setattr(_compiled, "covers_training", lambda *args: True)
    with sdpa_core.dispatch_policy("own"):
        compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
        q, k, v = (t.clone().requires_grad_(True) for t in base)
        compiled(q, k, v, slopes, dense).backward(grad)
    assert forward.calls == 1 and backward.calls == 1
    for what, got, want in zip("qkv", (q.grad, k.grad, v.grad), expected):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=f"d{what}")


def test_coverage_check_traces_without_graph_breaks_and_guards_the_head_dim(monkeypatch):
    """covers_training under dynamo: sizes turned symbolic (automatic dynamic shapes) and a head dim that
    changes; libsdpa (a stub here) is asked about the compiled head dim, never about a symbol."""
    asked = []

    def select(problem, scale, fields, *rest):
        asked.append((problem[6], rest[-1] if rest else None))
        return ("kernel", "")

    stub = types.SimpleNamespace(compiled_kernels=lambda: ["fwd_sm80<NoBias, bfloat16, hd64>",
                                                           "bwd_sm80<NoBias, bfloat16, hd64>"],
                                 select_forward=select, select_backward=select,
                                 DTYPE_FLOAT32=_kernels._C.DTYPE_FLOAT32, DTYPE_BOOL=_kernels._C.DTYPE_BOOL)
    monkeypatch.setattr(_compiled, "_C", stub)
    monkeypatch.setattr(_kernels, "on_device", lambda fn, device, *args: fn(*args))
    bias = _dispatch.KernelBias.causal_only(CausalVariant.UPPER_LEFT)

    def f(q, k):
        covered = _compiled.covers_training(q, k, bias, torch.are_deterministic_algorithms_enabled())
        return q * 2 if covered else q * 3

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch._dynamo.reset()
    for seq, dim, factor in ((8, 64, 2), (9, 64, 2), (10, 64, 2), (10, 80, 3), (11, 96, 3), (12, 64, 2)):
        q, k = torch.ones(1, 2, seq, dim), torch.ones(1, 2, seq + 1, dim)
        assert (compiled(q, k) == factor).all(), (seq, dim)
    assert asked and all(entry == (64, None) or entry == (64, False) for entry in asked), asked
