"""The RFC's API rules: deprecation, materialization, user biases, is_causal, errors, repr, explain."""

import math
import warnings

import pytest
import torch
from conftest import qkv
from oracle import assert_close, attention_fp64

import sdpa_core
from sdpa_core import AlibiBias, AttnBias, CausalBias, CausalVariant, TensorBias


def test_tensor_mask_warns_and_matches_pytorch():
    q, k, v = qkv(2, 2, 2, 17, 23, 32)
    mask = torch.rand(2, 1, 17, 23) > 0.2
    with pytest.warns(FutureWarning, match="TensorBias"):
        out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_tensor_bias_does_not_warn():
    q, k, v = qkv(1, 2, 2, 5, 7, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=TensorBias(torch.randn(5, 7)))


def test_tensor_mask_with_is_causal_applies_both_like_pytorch():
    q, k, v = qkv(1, 1, 1, 5, 7, 8)
    mask = torch.rand(5, 7) > 0.3
    with pytest.warns(FutureWarning):
        out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=True)
    assert_close(out, attention_fp64(q, k, v, dense=mask, causal="upper_left"), torch.float32)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=True)
    torch.testing.assert_close(out, expected.nan_to_num(0.0), atol=1e-5, rtol=1e-5)


class ShiftedBias(AttnBias):
    """A user bias that only knows how to materialize itself."""

    def __init__(self, seq_q, seq_kv):
        self.seq_q, self.seq_kv = seq_q, seq_kv
        self.calls = 0

    def materialize(self, device=None):
        self.calls += 1
        i = torch.arange(self.seq_q, device=device).view(-1, 1)
        j = torch.arange(self.seq_kv, device=device).view(1, -1)
        return -0.1 * (i - j).abs().float()


def test_user_bias_that_only_materializes_works():
    q, k, v = qkv(2, 3, 3, 11, 13, 16)
    bias = ShiftedBias(11, 13)
    assert bias.needs_materialization()
    out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    assert bias.calls == 1
    assert_close(out, attention_fp64(q, k, v, dense=bias.materialize()), torch.float32)
    out_causal = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=True)
    assert_close(out_causal, attention_fp64(q, k, v, dense=bias.materialize(), causal="upper_left"), torch.float32)


class DoublingBias(AttnBias):
    """A user bias with its own dispatch, which the entry point must call instead of materializing."""

    def materialize(self, device=None):
        raise AssertionError("must not materialize")

    def needs_materialization(self):
        return False

    @staticmethod
    def dispatch(query, key, value, attn_bias, causal, scale, dropout_p):
        return 2 * sdpa_core.scaled_dot_product_attention(query, key, value, is_causal=causal, scale=scale)


def test_user_bias_with_own_dispatch_runs_it():
    q, k, v = qkv(1, 2, 2, 6, 6, 16)
    out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=DoublingBias(), is_causal=True)
    assert_close(out, 2 * attention_fp64(q, k, v, causal="upper_left"), torch.float32)
    assert "DoublingBias.dispatch" in sdpa_core.explain(q, k, v, attn_mask=DoublingBias())


def test_abstract_base_requires_materialize():
    with pytest.raises(TypeError):
        AttnBias()


def test_is_causal_with_causal_bias_raises():
    q, k, v = qkv(1, 1, 1, 4, 6, 8)
    with pytest.raises(ValueError, match="is_causal"):
        sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_core.causal_lower_right(4, 6), is_causal=True)
    with pytest.raises(ValueError, match="is_causal"):
        sdpa_core.scaled_dot_product_attention(
            q, k, v, attn_mask=AlibiBias(torch.ones(1), 4, 6, causal=CausalVariant.LOWER_RIGHT), is_causal=True)


@pytest.mark.parametrize("variant", list(CausalVariant))
def test_causal_materialize_matches_formula(variant):
    mask = CausalBias(variant, 3, 4).materialize()
    expected = {
        CausalVariant.UPPER_LEFT: [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]],
        CausalVariant.LOWER_RIGHT: [[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]],
    }[variant]
    assert mask.dtype == torch.bool
    assert mask.int().tolist() == expected


def test_alibi_materialize_matches_formula():
    slopes = torch.tensor([0.5, 0.25])
    m = AlibiBias(slopes, 2, 4).materialize()
    assert m.shape == (1, 2, 2, 4)
    for h in range(2):
        for i in range(2):
            for j in range(4):
                assert m[0, h, i, j].item() == pytest.approx(-slopes[h].item() * abs(i + 2 - j))


@pytest.mark.parametrize("heads", [1, 2, 8, 12, 16, 24, 40])
def test_alibi_slopes_follow_the_paper(heads):
    slopes = sdpa_core.alibi_slopes(heads)
    assert slopes.dtype == torch.float32 and slopes.shape == (heads,)
    power = 2 ** math.floor(math.log2(heads))
    base = [2 ** (-8 * (k + 1) / power) for k in range(power)]
    extra = [2 ** (-8 * (k + 1) / (2 * power)) for k in range(0, 2 * power, 2)][: heads - power]
    torch.testing.assert_close(slopes, torch.tensor(base + extra, dtype=torch.float32))


def test_repr_never_materializes():
    class Exploding(torch.Tensor):
        pass
    for bias in (sdpa_core.causal_upper_left(10**6, 10**6),
                 AlibiBias(torch.ones(4), 10**6, 10**6, causal=CausalVariant.LOWER_RIGHT),
                 TensorBias(torch.zeros(2, 3))):
        text = repr(bias)
        assert type(bias).__name__ in text and len(text) < 200


@pytest.mark.parametrize("call,pattern", [
    (lambda q, k, v: sdpa_core.scaled_dot_product_attention(q, torch.cat([k, k[:1]]), torch.cat([v, v[:1]])),
     "batch"),
    (lambda q, k, v: sdpa_core.scaled_dot_product_attention(q, k, v[:, :, :3]), "seq_len"),
    (lambda q, k, v: sdpa_core.scaled_dot_product_attention(q, k[..., :8], v), "head_dim"),
    (lambda q, k, v: sdpa_core.scaled_dot_product_attention(q, k.half(), v), "key.dtype"),
    (lambda q, k, v: sdpa_core.scaled_dot_product_attention(q[0, 0, 0], k[0, 0, 0], v[0, 0, 0]),
     "query must have at least 2 dimensions"),
    (lambda q, k, v: sdpa_core.scaled_dot_product_attention(q, k[:, :2], v[:, :2]), "enable_gqa"),
    (lambda q, k, v: sdpa_core.scaled_dot_product_attention(q, k[:, :3], v[:, :3], enable_gqa=True), "multiple"),
    (lambda q, k, v: sdpa_core.scaled_dot_product_attention(q, k, v, dropout_p=1.5), "dropout_p"),
    (lambda q, k, v: sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=TensorBias(torch.ones(3, 5))),
     "does not broadcast"),
    (lambda q, k, v: sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_core.causal_upper_left(7, 6)),
     "seq_len_q=7"),
    (lambda q, k, v: sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_core.causal_upper_left(6, 9)),
     "seq_len_kv=9"),
    (lambda q, k, v: sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=AlibiBias(torch.ones(3), 6, 10)),
     r"slopes must have shape \(4,\) or \(2, 4\)"),
    (lambda q, k, v: sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask="causal"), "attn_mask must be"),
])
def test_bad_input_names_the_argument(call, pattern):
    q, k, v = qkv(2, 4, 4, 6, 10, 16)
    with pytest.raises(RuntimeError, match=pattern) as raised:  # what torch's callers catch
        call(q, k, v)
    assert isinstance(raised.value, (ValueError, TypeError))


@pytest.mark.parametrize("make,pattern", [
    (lambda: AlibiBias(torch.ones(4, dtype=torch.float64), 3, 3), "float32"),
    (lambda: AlibiBias(torch.ones(1, 2, 4), 3, 3), r"\(H,\) or \(B, H\)"),
    (lambda: CausalBias(CausalVariant.UPPER_LEFT, -1, 3), "seq_len_q"),
    (lambda: CausalBias("upper", 3, 3), "CausalVariant"),
    (lambda: TensorBias(torch.ones(3, 3, dtype=torch.int32)), "bool or floating"),
    (lambda: TensorBias([[0.0]]), "torch.Tensor"),
])
def test_bias_construction_validates(make, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        make()


def test_explain_names_the_fallback_and_every_reason_on_cpu():
    q, k, v = qkv(1, 2, 2, 8, 8, 64)
    text = sdpa_core.explain(q, k, v, attn_mask=sdpa_core.causal_lower_right(8, 8), dropout_p=0.1)
    assert "PyTorch fallback" in text
    assert "cpu" in text and "dropout" in text and "float32" in text


def test_explain_reports_deprecated_tensor_and_materialization():
    q, k, v = qkv(1, 2, 2, 8, 8, 64)
    assert "deprecated" in sdpa_core.explain(q, k, v, attn_mask=torch.zeros(8, 8))
    assert "needs materialization" in sdpa_core.explain(q, k, v, attn_mask=ShiftedBias(8, 8))


def test_dropout_is_applied_in_fallback():
    q, k, v = qkv(1, 2, 2, 16, 16, 32)
    torch.manual_seed(1)
    a = sdpa_core.scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    assert not torch.allclose(a, sdpa_core.scaled_dot_product_attention(q, k, v))


def test_fused_eligible_agrees_with_refusal_reasons():
    """The hot path's one-expression check and explain()'s reasons must never disagree."""
    from sdpa_core._dispatch import fused_eligible, python_refusals
    from sdpa_core._kernel_bias import KernelBias
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            q, k, v = qkv(1, 2, 2, 8, 8, 16, device, dtype)
            variants = {
                "plain": (q, k, v, KernelBias.causal_only(None), 0.0),
                "dropout": (q, k, v, KernelBias.causal_only(None), 0.1),
                "grad": (q.clone().requires_grad_(True), k, v, KernelBias.causal_only(None), 0.0),
                "dense_grad": (q, k, v, KernelBias.dense_tensor(torch.zeros(8, 8, device=device, dtype=dtype,
                                                                            requires_grad=True), None), 0.0),
                "slopes_grad": (q, k, v, KernelBias.alibi(torch.ones(2, device=device, requires_grad=True), None),
                                0.0),
                "dv": (q, k, v[..., :8], KernelBias.causal_only(None), 0.0),
                "stride": (q, k, torch.randn(1, 2, 16, 8, device=device).to(dtype).transpose(-1, -2),
                           KernelBias.causal_only(None), 0.0),
                "empty": (q[:, :, :0], k, v, KernelBias.causal_only(None), 0.0),
                "dense_f32": (q, k, v, KernelBias.dense_tensor(torch.zeros(8, 8, device=device), None), 0.0),
                "dense_bool": (q, k, v, KernelBias.dense_tensor(torch.ones(8, 8, dtype=torch.bool, device=device),
                                                                None), 0.0),
            }
            for name, args in variants.items():
                assert fused_eligible(*args) == (not python_refusals(*args)), (device, dtype, name)
                with torch.no_grad():  # a bias gradient is only wanted where autograd records
                    assert fused_eligible(*args) == (not python_refusals(*args)), (device, dtype, name, "no_grad")
