"""sdpa_core against torch's own SDPA, side by side (project issue #10).

Every call torch accepts, sdpa_core accepts with the same result; what torch rejects, sdpa_core rejects with
a RuntimeError. The documented differences only: the FutureWarning for Tensor masks, and fully masked rows
giving zeros. The sweep (tests/python/torch_cases.py) covers what torch's SDPA tests cover: N-D inputs,
every dtype, bool/float/broadcast masks, scale, GQA, empty dims and torch's bias objects.

``test_sweep_cpu_has_no_differences`` lists every difference at once; ``test_sweep_group`` runs the same
cases one group at a time, so a failure says where. Then: the deprecation warning, torch.export with
dynamic shapes, torch.compile, gradcheck and compiled training steps for every built-in bias.
"""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
import torch.nn.functional as F
import torch_cases
from conftest import HAS_CUDA
from torch.nn.attention import bias as torch_bias

import sdpa_core
from sdpa_core import CausalVariant

CUDA_REASON = "needs a CUDA GPU: the fp16/bf16 CUDA sweep runs on the device machine"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Thousands of small calls: intra-op threads only add synchronization (ten times the wall time on
    a busy two-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.lru_cache(maxsize=None)
def _cases(device: str) -> tuple:
    dtypes = torch_cases.CPU_DTYPES if device == "cpu" else torch_cases.CUDA_DTYPES
    return tuple(torch_cases.sweep(device, dtypes))


_outcomes: dict = {}


def _run(cases) -> torch_cases.Outcome:
    """Outcomes of ``cases``, each case run once per session (the group tests reuse the full sweep's)."""
    total = torch_cases.Outcome()
    for case in cases:
        if case not in _outcomes:
            _outcomes[case] = torch_cases.run_case(case)
        total.differences += _outcomes[case].differences
        total.torch_bugs += _outcomes[case].torch_bugs
    return total


def _report(found: torch_cases.Outcome) -> str:
    text = torch_cases.summarize(found.differences)
    if found.torch_bugs:
        text += ("\n\nWhere torch itself is not the float64 math (sdpa_core was held to the math there):\n"
                 + "\n".join(found.torch_bugs))
    return text


def _check(cases):
    found = _run(cases)
    if found.torch_bugs:
        print("\n".join(["torch bugs seen (not failures):"] + found.torch_bugs))
    assert not found.differences, _report(found)


def test_sweep_is_deterministic_and_broad():
    cases = _cases("cpu")
    assert cases == tuple(torch_cases.sweep("cpu", torch_cases.CPU_DTYPES))
    ranks = {len(c.q_shape) for c in cases}
    assert {3, 4, 5} <= ranks
    assert {c.dtype for c in cases} == set(torch_cases.CPU_DTYPES)
    assert {(c.q_shape[-2], c.k_shape[-2]) for c in cases} >= set(torch_cases.SEQ_PAIRS)
    assert any(c.q_shape[-1] != c.v_shape[-1] for c in cases)
    assert {c.scale for c in cases} == set(torch_cases.SCALES)
    assert any(c.enable_gqa for c in cases)
    assert {c.mask.kind for c in cases if c.mask is not None} == {
        "tensor", "torch_causal", "torch_variant", "tensor_bias", "causal_bias", "alibi"}


# The CPU sweep encodes torch 2.13's CPU behaviour, the torch CI pins; torch 2.11's CPU kernel (on the GPU
# machine) dies with SIGFPE inside torch's own call on some empty-dimension cases, killing the test run.
TORCH_213 = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 13)
requires_torch_213 = pytest.mark.skipif(not TORCH_213, reason=f"the CPU sweep expects torch >= 2.13's CPU kernels; "
                                                              f"torch {torch.__version__}'s crash on some of its cases")


@requires_torch_213
def test_sweep_cpu_has_no_differences():
    """The whole CPU sweep; the assertion message lists every difference, grouped by cause."""
    _check(_cases("cpu"))


def _groups(device):
    return sorted({c.group for c in torch_cases.sweep(device, torch_cases.CPU_DTYPES[:1])})


@requires_torch_213
@pytest.mark.parametrize("group", _groups("cpu"))
def test_sweep_group(group):
    _check([c for c in _cases("cpu") if c.group == group])


@pytest.mark.skipif(not HAS_CUDA, reason=CUDA_REASON)
def test_sweep_cuda_has_no_differences():
    _check(_cases("cuda"))


@pytest.mark.skipif(not HAS_CUDA, reason=CUDA_REASON)
@pytest.mark.parametrize("prefix", ["rank3/", "rank4/", "rank5/", "gqa/", "empty/", "extra/"])
def test_sweep_cuda_group(prefix):
    _check([c for c in _cases("cuda") if c.group.startswith(prefix)])


def test_self_check_reports_a_wrong_result():
    """The comparison itself: a wrong value, a non-zero fully masked row and a wrong dtype are reported;
    the oracle agrees with torch where torch is right."""
    theirs = torch.randn(2, 3, 4, 5)
    ref = theirs.double()
    wrong = theirs.clone()
    wrong[0, 0, 0, 0] += 0.1
    assert torch_cases.compare("c", wrong, theirs, ref, None, torch.float32).differences
    dead = torch.zeros(2, 3, 4, 1, dtype=torch.bool)
    dead[:, :, 1] = True
    assert torch_cases.compare("c", theirs, theirs, ref, dead, torch.float32).differences
    zeroed = theirs.masked_fill(dead, 0.0)
    assert not torch_cases.compare("c", zeroed, theirs, ref, dead, torch.float32).differences
    assert torch_cases.compare("c", theirs.half(), theirs, ref, None, torch.float32).differences
    # the oracle is the math torch computes (float64, bool mask, GQA, is_causal)
    q, k, v = torch.randn(2, 4, 5, 8, dtype=torch.float64), *torch.randn(2, 2, 2, 7, 8, dtype=torch.float64)
    mask = torch.rand(5, 7) > 0.3
    mask[:, 0] = True
    for kwargs in ({"attn_mask": mask}, {"is_causal": True}):
        expected = F.scaled_dot_product_attention(q, k, v, enable_gqa=True, **kwargs)
        got = torch_cases.oracle(q, k, v, kwargs.get("attn_mask"), kwargs.get("is_causal", False), None, True)
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)


# ----------------------------------------------------------------------------------- deprecation warning

def _qkv(*shape_q, seq_kv=None, dtype=torch.float32, requires_grad=False):
    seq_kv = shape_q[-2] if seq_kv is None else seq_kv
    shape_kv = shape_q[:-2] + (seq_kv, shape_q[-1])
    return tuple(torch.randn(s, dtype=dtype).requires_grad_(requires_grad) for s in (shape_q, shape_kv, shape_kv))


def test_tensor_mask_warns_once_per_call_site():
    q, k, v = _qkv(2, 3, 5, 8, seq_kv=7)
    mask = torch.rand(5, 7) > 0.3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(3):
            sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # a second call site
    future = [w for w in caught if issubclass(w.category, FutureWarning)]
    assert len(future) == 2, [str(w.message) for w in caught]
    assert all(w.filename == __file__ for w in future), [w.filename for w in future]
    assert "TensorBias" in str(future[0].message)


@pytest.mark.parametrize("make", [torch_bias.causal_upper_left, torch_bias.causal_lower_right])
def test_torch_causal_bias_is_accepted_without_warning(make):
    q, k, v = _qkv(2, 3, 5, 8, seq_kv=7)
    bias = make(5, 7)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=bias), atol=1e-5, rtol=1e-5)


def test_compile_fullgraph_with_tensor_mask():
    """The deprecation warning must not break a fullgraph compile."""
    torch._dynamo.reset()

    def f(q, k, v, mask):
        return sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask) * 2

    q, k, v = _qkv(2, 3, 9, 16, seq_kv=11)
    mask = torch.rand(2, 1, 9, 11) > 0.2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        expected = f(q, k, v, mask)
        got = torch.compile(f, fullgraph=True, backend="aot_eager")(q, k, v, mask)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, 2 * F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-5,
                               rtol=1e-5)


# ------------------------------------------------------------------------------------------- torch.export

class CausalAttention(torch.nn.Module):
    def forward(self, q, k, v):
        return sdpa_core.scaled_dot_product_attention(q, k, v, is_causal=True)


class MaskedAttention(torch.nn.Module):
    def forward(self, q, k, v, mask):
        return sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_core.TensorBias(mask))


class TensorMaskedAttention(torch.nn.Module):
    def forward(self, q, k, v, mask):
        return sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _export_inputs(batch, seq, with_mask):
    q, k, v = _qkv(batch, 4, seq, 16)
    return (q, k, v, torch.rand(batch, 1, seq, seq) > 0.3) if with_mask else (q, k, v)


@pytest.mark.parametrize("module", [CausalAttention, MaskedAttention, TensorMaskedAttention])
def test_export_with_dynamic_batch_and_seq(module):
    with_mask = module is not CausalAttention
    batch, seq = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("seq", min=2, max=512)
    dims = {0: batch, 2: seq}
    dynamic_shapes = [dims, dims, dims] + ([{0: batch, 2: seq, 3: seq}] if with_mask else [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        exported = torch.export.export(module(), _export_inputs(2, 8, with_mask), dynamic_shapes=tuple(dynamic_shapes))
        for b, s in ((3, 13), (1, 40), (5, 2)):
            inputs = _export_inputs(b, s, with_mask)
            expected = F.scaled_dot_product_attention(*inputs[:3], is_causal=not with_mask,
                                                      attn_mask=inputs[3] if with_mask else None)
            got = exported.module()(*inputs)
            assert got.shape == expected.shape
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------- gradients, every bias

# name -> (seq_q, seq_kv, builder(seq_q, seq_kv, heads, dense) -> (attn_mask, is_causal), reference mask)
def _alibi_dense(slopes, seq_q, seq_kv, variant=None):
    i = torch.arange(seq_q, dtype=torch.float64).view(-1, 1)
    j = torch.arange(seq_kv, dtype=torch.float64).view(1, -1)
    dense = -slopes.double()[:, None, None] * (i + seq_kv - seq_q - j).abs()
    if variant is not None:
        offset = seq_kv - seq_q if variant == "lower_right" else 0
        dense = dense.masked_fill(j > i + offset, float("-inf"))
    return dense


SLOPES = torch.tensor([0.3, 0.7])

BIASES = {
    "is_causal": lambda sq, skv, dense: (None, True),
    "causal_upper_left": lambda sq, skv, dense: (sdpa_core.causal_upper_left(sq, skv), False),
    "causal_lower_right": lambda sq, skv, dense: (sdpa_core.causal_lower_right(sq, skv), False),
    "alibi": lambda sq, skv, dense: (sdpa_core.AlibiBias(SLOPES, sq, skv), False),
    "alibi_lower_right": lambda sq, skv, dense: (
        sdpa_core.AlibiBias(SLOPES, sq, skv, causal=CausalVariant.LOWER_RIGHT), False),
    "alibi_is_causal": lambda sq, skv, dense: (sdpa_core.AlibiBias(SLOPES, sq, skv), True),
    "tensor_bias": lambda sq, skv, dense: (sdpa_core.TensorBias(dense), False),
    "tensor_bias_is_causal": lambda sq, skv, dense: (sdpa_core.TensorBias(dense), True),
}


def _reference_mask(name, sq, skv, dense):
    """The same bias for torch, built from the formulas (a float64 additive mask, -inf = masked)."""
    i = torch.arange(sq).view(-1, 1)
    j = torch.arange(skv).view(1, -1)
    upper_left, lower_right = j > i, j > i + skv - sq
    zeros = torch.zeros(sq, skv, dtype=torch.float64)
    return {
        "is_causal": zeros.masked_fill(upper_left, float("-inf")),
        "causal_upper_left": zeros.masked_fill(upper_left, float("-inf")),
        "causal_lower_right": zeros.masked_fill(lower_right, float("-inf")),
        "alibi": _alibi_dense(SLOPES, sq, skv),
        "alibi_lower_right": _alibi_dense(SLOPES, sq, skv, "lower_right"),
        "alibi_is_causal": _alibi_dense(SLOPES, sq, skv, "upper_left"),
        "tensor_bias": dense,
        "tensor_bias_is_causal": dense.masked_fill(upper_left, float("-inf")),
    }[name]


@pytest.mark.parametrize("seq_q,seq_kv", [(3, 5), (5, 3)])
@pytest.mark.parametrize("name", sorted(BIASES))
def test_gradcheck_float64(name, seq_q, seq_kv):
    q, k, v = _qkv(1, 2, seq_q, 4, seq_kv=seq_kv, dtype=torch.float64, requires_grad=True)
    dense = torch.randn(2, seq_q, seq_kv, dtype=torch.float64, requires_grad=True)
    inputs = (q, k, v, dense) if name.startswith("tensor_bias") else (q, k, v)

    def f(q, k, v, dense=None):
        mask, is_causal = BIASES[name](seq_q, seq_kv, dense)
        return sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, fast_mode=True)


@pytest.mark.parametrize("name", sorted(BIASES))
def test_float64_forward_and_grad_match_torch(name):
    """Output and gradients (q, k, v and a TensorBias's tensor) equal torch's with the materialized mask."""
    seq_q, seq_kv = 4, 6
    q, k, v = _qkv(2, 2, seq_q, 8, seq_kv=seq_kv, dtype=torch.float64, requires_grad=True)
    dense = torch.randn(2, seq_q, seq_kv, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, seq_q, 8, dtype=torch.float64)
    mask, is_causal = BIASES[name](seq_q, seq_kv, dense)
    ours = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
    grads = torch.autograd.grad((ours * w).sum(), (q, k, v, dense), allow_unused=True)
    theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=_reference_mask(name, seq_q, seq_kv, dense))
    expected = torch.autograd.grad((theirs * w).sum(), (q, k, v, dense), allow_unused=True)
    torch.testing.assert_close(ours, theirs, atol=1e-10, rtol=1e-10)
    for got, want in zip(grads, expected):
        if want is None:
            assert got is None or not got.any()
        else:
            torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", sorted(BIASES))
def test_compiled_training_step_matches_eager(name):
    torch._dynamo.reset()
    seq_q, seq_kv = 7, 11
    weight = torch.randn(2, 2, seq_q, 16)

    def step(q, k, v, dense):
        mask, is_causal = BIASES[name](seq_q, seq_kv, dense)
        out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
        loss = (out * weight).sum()
        loss.backward()
        return loss

    q, k, v = _qkv(2, 2, seq_q, 16, seq_kv=seq_kv)
    dense = torch.randn(2, seq_q, seq_kv)

    def leaves():
        return [t.detach().clone().requires_grad_(True) for t in (q, k, v, dense)]

    eager_inputs, compiled_inputs = leaves(), leaves()
    eager_loss = step(*eager_inputs)
    compiled_loss = torch.compile(step, backend="aot_eager")(*compiled_inputs)
    torch.testing.assert_close(compiled_loss, eager_loss, atol=1e-5, rtol=1e-5)
    for name_, e, c in zip("qkv", eager_inputs, compiled_inputs):
        assert c.grad is not None, f"no gradient for {name_} in the compiled step"
        torch.testing.assert_close(c.grad, e.grad, atol=1e-5, rtol=1e-5)
    if name.startswith("tensor_bias"):
        assert compiled_inputs[3].grad is not None, "no gradient for the TensorBias tensor in the compiled step"
        torch.testing.assert_close(compiled_inputs[3].grad, eager_inputs[3].grad, atol=1e-5, rtol=1e-5)
