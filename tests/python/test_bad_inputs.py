"""Bad inputs, one row each: each must raise a RuntimeError (a subclass that is also a ValueError or
TypeError is fine) whose message names the argument at fault. Then inputs that look odd but that torch
accepts, which must not raise: head_dim 0, and NaN in the query (NaN rows out, on every path).
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import HAS_CUDA
from torch.nn.attention import bias as torch_bias

import sdpa_core
from sdpa_core import AlibiBias, CausalVariant, TensorBias

# (B, H, Sq, E) = (2, 4, 6, 16) queries; keys and values of Skv = 10
B, H, SQ, SKV, E = 2, 4, 6, 10, 16


def _inputs(dtype=torch.float32):
    torch.manual_seed(0)
    return (torch.randn(B, H, SQ, E, dtype=dtype), torch.randn(B, H, SKV, E, dtype=dtype),
            torch.randn(B, H, SKV, E, dtype=dtype))


def sdpa(q, k, v, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # Tensor masks are deprecated; that is not the point here
        return sdpa_core.scaled_dot_product_attention(q, k, v, **kwargs)


def _five_d(t, n1=3):
    return t.unsqueeze(0).expand(n1, *t.shape).contiguous()


def _torch_causal(make, seq_q, seq_kv):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about lower-right with Sq > Skv
        return make(seq_q, seq_kv)


# id -> (call(q, k, v), regex the message must match: the argument's name)
BAD = {
    "tensor_bias_1d_not_broadcasting": (
        lambda q, k, v: sdpa(q, k, v, attn_mask=TensorBias(torch.zeros(SKV + 1))), r"attn_mask|TensorBias"),
    "tensor_bias_1d_bool_not_broadcasting": (
        lambda q, k, v: sdpa(q, k, v, attn_mask=TensorBias(torch.ones(3, dtype=torch.bool))), r"attn_mask|TensorBias"),
    "tensor_bias_4d_wrong_heads": (
        lambda q, k, v: sdpa(q, k, v, attn_mask=TensorBias(torch.zeros(1, 3, SQ, SKV))), r"attn_mask|TensorBias"),
    "tensor_bias_5d_on_5d_inputs_not_broadcasting": (
        lambda q, k, v: sdpa(_five_d(q), _five_d(k), _five_d(v), attn_mask=TensorBias(torch.zeros(2, 1, 1, SQ, SKV))),
        r"attn_mask|TensorBias"),
    "tensor_bias_5d_on_4d_inputs": (
        lambda q, k, v: sdpa(q, k, v, attn_mask=TensorBias(torch.zeros(2, B, H, SQ, SKV))), r"attn_mask|TensorBias"),
    "tensor_mask_5d_on_4d_inputs": (
        lambda q, k, v: sdpa(q, k, v, attn_mask=torch.zeros(2, B, H, SQ, SKV)), r"attn_mask"),
    "tensor_mask_wrong_seq_kv": (
        lambda q, k, v: sdpa(q, k, v, attn_mask=torch.zeros(SQ, SKV - 1)), r"attn_mask"),
    "scale_nan": (lambda q, k, v: sdpa(q, k, v, scale=float("nan")), r"scale"),
    "scale_inf": (lambda q, k, v: sdpa(q, k, v, scale=float("inf")), r"scale"),
    "scale_minus_inf": (lambda q, k, v: sdpa(q, k, v, scale=float("-inf")), r"scale"),
    "scale_nan_with_bias": (
        lambda q, k, v: sdpa(q, k, v, attn_mask=sdpa_core.causal_lower_right(SQ, SKV), scale=float("nan")), r"scale"),
    "key_dtype": (lambda q, k, v: sdpa(q, k.double(), v), r"key"),
    "value_dtype": (lambda q, k, v: sdpa(q, k, v.half()), r"value"),
    "query_dtype": (lambda q, k, v: sdpa(q.bfloat16(), k, v), r"query|key"),
    "integer_inputs": (lambda q, k, v: sdpa(q.int(), k.int(), v.int()), r"query"),
    "gqa_heads_not_divisible": (
        lambda q, k, v: sdpa(q, k[:, :3], v[:, :3], enable_gqa=True), r"heads|enable_gqa"),
    "gqa_heads_not_divisible_5d": (
        lambda q, k, v: sdpa(_five_d(q), _five_d(k[:, :3]), _five_d(v[:, :3]), enable_gqa=True), r"heads|enable_gqa"),
    "heads_differ_without_enable_gqa": (lambda q, k, v: sdpa(q, k[:, :2], v[:, :2]), r"enable_gqa"),
    "key_value_seq_mismatch": (lambda q, k, v: sdpa(q, k, v[:, :, :SKV - 1]), r"value"),
    "key_value_seq_mismatch_with_bias": (
        lambda q, k, v: sdpa(q, k, v[:, :, :SKV - 1], attn_mask=sdpa_core.causal_upper_left(SQ, SKV)), r"value"),
    "key_head_dim_mismatch": (lambda q, k, v: sdpa(q, k[..., :E - 1], v), r"key|head_dim"),
    "dropout_negative": (lambda q, k, v: sdpa(q, k, v, dropout_p=-0.1), r"dropout_p"),
    "dropout_one": (lambda q, k, v: sdpa(q, k, v, dropout_p=1.0), r"dropout_p"),
    "dropout_above_one": (lambda q, k, v: sdpa(q, k, v, dropout_p=1.5), r"dropout_p"),
    "dropout_nan": (lambda q, k, v: sdpa(q, k, v, dropout_p=float("nan")), r"dropout_p"),
    "attn_mask_int32": (lambda q, k, v: sdpa(q, k, v, attn_mask=torch.ones(SQ, SKV, dtype=torch.int32)), r"attn_mask"),
    "attn_mask_int64": (lambda q, k, v: sdpa(q, k, v, attn_mask=torch.ones(SQ, SKV, dtype=torch.int64)), r"attn_mask"),
    "attn_mask_uint8": (lambda q, k, v: sdpa(q, k, v, attn_mask=torch.ones(SQ, SKV, dtype=torch.uint8)), r"attn_mask"),
    "tensor_bias_int32": (
        lambda q, k, v: sdpa(q, k, v, attn_mask=TensorBias(torch.ones(SQ, SKV, dtype=torch.int32))),
        r"attn_mask|TensorBias|bias"),
    "attn_mask_not_a_tensor": (lambda q, k, v: sdpa(q, k, v, attn_mask="causal"), r"attn_mask"),
    "torch_causal_upper_left_wrong_seq_q": (
        lambda q, k, v: sdpa(q, k, v, attn_mask=_torch_causal(torch_bias.causal_upper_left, SQ + 1, SKV)),
        r"seq_len_q"),
    "torch_causal_upper_left_wrong_seq_kv": (
        lambda q, k, v: sdpa(q, k, v, attn_mask=_torch_causal(torch_bias.causal_upper_left, SQ, SKV + 3)),
        r"seq_len_kv"),
    "torch_causal_lower_right_wrong_seq_q": (
        lambda q, k, v: sdpa(q, k, v, attn_mask=_torch_causal(torch_bias.causal_lower_right, SQ - 1, SKV)),
        r"seq_len_q"),
    "torch_causal_lower_right_wrong_seq_kv": (
        lambda q, k, v: sdpa(q, k, v, attn_mask=_torch_causal(torch_bias.causal_lower_right, SQ, SKV - 1)),
        r"seq_len_kv"),
    "torch_causal_with_is_causal": (
        lambda q, k, v: sdpa(q, k, v, attn_mask=_torch_causal(torch_bias.causal_lower_right, SQ, SKV), is_causal=True),
        r"is_causal"),
    "causal_bias_with_is_causal": (
        lambda q, k, v: sdpa(q, k, v, attn_mask=sdpa_core.causal_lower_right(SQ, SKV), is_causal=True), r"is_causal"),
    "causal_bias_wrong_seq_q": (
        lambda q, k, v: sdpa(q, k, v, attn_mask=sdpa_core.causal_upper_left(SQ + 1, SKV)), r"seq_len_q"),
    "alibi_slopes_wrong_heads": (
        lambda q, k, v: sdpa(q, k, v, attn_mask=AlibiBias(torch.ones(H - 1), SQ, SKV)), r"slopes"),
    "alibi_slopes_wrong_batch": (
        lambda q, k, v: sdpa(q, k, v, attn_mask=AlibiBias(torch.ones(B + 1, H), SQ, SKV)), r"slopes"),
    "alibi_slopes_3d": (
        lambda q, k, v: sdpa(q, k, v, attn_mask=AlibiBias(torch.ones(1, B, H), SQ, SKV)), r"slopes"),
    "alibi_slopes_int64": (
        lambda q, k, v: sdpa(q, k, v, attn_mask=AlibiBias(torch.ones(H, dtype=torch.int64), SQ, SKV)), r"slopes"),
    "alibi_slopes_bool": (
        lambda q, k, v: sdpa(q, k, v, attn_mask=AlibiBias(torch.ones(H, dtype=torch.bool), SQ, SKV)), r"slopes"),
    "alibi_slopes_not_a_tensor": (
        lambda q, k, v: sdpa(q, k, v, attn_mask=AlibiBias([0.5] * H, SQ, SKV)), r"slopes"),
    "alibi_wrong_seq_kv": (
        lambda q, k, v: sdpa(q, k, v, attn_mask=AlibiBias(torch.ones(H), SQ, SKV + 1)), r"seq_len_kv"),
    "query_1d": (lambda q, k, v: sdpa(q[0, 0, 0], k[0, 0, 0], v[0, 0, 0]), r"query"),
    "query_not_a_tensor": (lambda q, k, v: sdpa(q.tolist(), k, v), r"query"),
}


@pytest.mark.parametrize("row", sorted(BAD))
def test_bad_input_raises_runtime_error_naming_the_argument(row):
    call, pattern = BAD[row]
    q, k, v = _inputs()
    with pytest.raises(Exception) as info:
        call(q, k, v)
    error = info.value
    assert isinstance(error, RuntimeError), f"{type(error).__name__} is not a RuntimeError: {error}"
    assert re.search(pattern, str(error)), f"message does not name the argument ({pattern}): {error}"


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU for inputs on two devices")
@pytest.mark.parametrize("which", ["key", "value", "attn_mask"])
def test_mismatched_devices_raise(which):
    q, k, v = _inputs()
    q, k, v = q.cuda(), k.cuda(), v.cuda()
    mask = None
    if which == "key":
        k = k.cpu()
    elif which == "value":
        v = v.cpu()
    else:
        mask = TensorBias(torch.zeros(SQ, SKV))  # on the CPU
    with pytest.raises(Exception) as info:
        sdpa(q, k, v, attn_mask=mask)
    assert isinstance(info.value, RuntimeError), f"{type(info.value).__name__}: {info.value}"
    message = str(info.value)
    assert which in message and ("device" in message or "cuda" in message), message


# ------------------------------------------------------------------------------- what must not raise

PATHS = {
    "none": lambda: (None, False),
    "is_causal": lambda: (None, True),
    "bool_tensor": lambda: (torch.rand(SQ, SKV) > 0.2, False),
    "float_tensor": lambda: (torch.randn(SQ, SKV), False),
    "tensor_bias": lambda: (TensorBias(torch.randn(H, SQ, SKV)), False),
    "tensor_bias_is_causal": lambda: (TensorBias(torch.randn(H, SQ, SKV)), True),
    "causal_upper_left": lambda: (sdpa_core.causal_upper_left(SQ, SKV), False),
    "causal_lower_right": lambda: (sdpa_core.causal_lower_right(SQ, SKV), False),
    "torch_causal_lower_right": lambda: (torch_bias.causal_lower_right(SQ, SKV), False),
    "alibi": lambda: (AlibiBias(sdpa_core.alibi_slopes(H), SQ, SKV), False),
    "alibi_lower_right": lambda: (
        AlibiBias(sdpa_core.alibi_slopes(H), SQ, SKV, causal=CausalVariant.LOWER_RIGHT), False),
}


def _torch_mask(mask, query_dtype):
    """What torch gets for ``mask``: sdpa_core's biases materialized (float masks in the query dtype,
    as torch accepts for every dtype)."""
    if isinstance(mask, sdpa_core.AttnBias):
        dense = mask.materialize()
        return dense if dense.dtype == torch.bool else dense.to(query_dtype)
    if isinstance(mask, torch.Tensor) and mask.is_floating_point() and type(mask) is torch.Tensor:
        return mask.to(query_dtype)
    return mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("value_dim", [0, 5])
@pytest.mark.parametrize("path", ["none", "is_causal", "bool_tensor", "tensor_bias", "causal_lower_right", "alibi"])
def test_head_dim_zero_like_torch(path, value_dim, dtype):
    torch.manual_seed(0)
    q, k = torch.randn(B, H, SQ, 0, dtype=dtype), torch.randn(B, H, SKV, 0, dtype=dtype)
    v = torch.randn(B, H, SKV, value_dim, dtype=dtype)
    mask, is_causal = PATHS[path]()
    if isinstance(mask, TensorBias):
        mask.bias = mask.bias.to(dtype)
    out = sdpa(q, k, v, attn_mask=mask, is_causal=is_causal)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=_torch_mask(mask, dtype), is_causal=is_causal)
    assert out.shape == expected.shape == (B, H, SQ, value_dim)
    assert out.dtype == dtype
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("path", sorted(PATHS))
def test_nan_query_gives_nan_rows(path, dtype):
    """A NaN in query row r makes output row r NaN (on torch's float64 path too); other rows stay
    finite. Row 3 keeps at least one key under every mask here."""
    q, k, v = _inputs(dtype)
    q[:, :, 3, 1] = float("nan")
    torch.manual_seed(1)
    mask, is_causal = PATHS[path]()
    if isinstance(mask, torch.Tensor) and type(mask) is torch.Tensor and mask.is_floating_point():
        mask = mask.to(dtype)
    out = sdpa(q, k, v, attn_mask=mask, is_causal=is_causal)
    assert torch.isnan(out[:, :, 3]).all(), f"row 3 of the output is not NaN: {out[0, 0, 3]}"
    others = torch.cat([out[:, :, :3], out[:, :, 4:]], dim=2)
    assert not torch.isnan(others).any(), "NaN leaked into rows whose query has none"
