"""Every bias and rule of the API against the fp64 oracle, on every device present.

On CPU this exercises the PyTorch fallback; on a GPU the same cases run through the fused kernels.
"""

import pytest
import torch
from cases import BIASES, SIZES
from conftest import DEVICES, qkv
from oracle import assert_close, attention_fp64

import sdpa_core


def _dtypes(device):
    return [torch.float32] if device == "cpu" else [torch.bfloat16, torch.float16]


def _run_case(name, batch, heads_q, heads_kv, seq_q, seq_kv, dim, device, dtype, enable_gqa=False):
    q, k, v = qkv(batch, heads_q, heads_kv, seq_q, seq_kv, dim, device, dtype)
    mask, is_causal, oracle_kwargs = BIASES[name](batch, heads_q, seq_q, seq_kv, device, dtype)
    out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                                 enable_gqa=enable_gqa)
    assert_close(out, attention_fp64(q, k, v, **oracle_kwargs), dtype)
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(BIASES))
@pytest.mark.parametrize("seq_q,seq_kv", SIZES)
def test_bias_matches_oracle(device, name, seq_q, seq_kv):
    for dtype in _dtypes(device):
        _run_case(name, 2, 3, 3, seq_q, seq_kv, 64, device, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(BIASES))
def test_grouped_query_attention(device, name):
    for dtype in _dtypes(device):
        _run_case(name, 2, 8, 2, 37, 53, 64, device, dtype, enable_gqa=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["none", "causal_lower_right", "alibi_upper_left", "dense_float"])
def test_non_contiguous_inputs(device, name):
    """(B, S, H, D) tensors viewed as (B, H, S, D), the layout projections produce."""
    for dtype in _dtypes(device):
        def bshd(seq, heads):
            return torch.randn(2, seq, heads, 64, device=device).to(dtype).transpose(1, 2)
        q, k, v = bshd(45, 4), bshd(77, 4), bshd(77, 4)
        assert not q.is_contiguous()
        mask, is_causal, oracle_kwargs = BIASES[name](2, 4, 45, 77, device, dtype)
        out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
        assert_close(out, attention_fp64(q, k, v, **oracle_kwargs), dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_lower_right_with_more_queries_than_keys_zeroes_top_rows(device):
    dtype = _dtypes(device)[0]
    q, k, v = qkv(1, 2, 2, 40, 9, 64, device, dtype)
    out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_core.causal_lower_right(40, 9))
    assert torch.equal(out[:, :, :31].float().cpu(), torch.zeros(1, 2, 31, 64))
    assert_close(out, attention_fp64(q, k, v, causal="lower_right"), dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_custom_scale(device):
    dtype = _dtypes(device)[0]
    q, k, v = qkv(1, 2, 2, 33, 65, 64, device, dtype)
    slopes = torch.rand(2, device=device)
    bias = sdpa_core.AlibiBias(slopes, 33, 65)
    out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=0.37)
    assert_close(out, attention_fp64(q, k, v, slopes=slopes, scale=0.37), dtype)


def test_cpu_bfloat16_fallback_keeps_alibi_precision():
    """The fallback computes biased attention in fp32: a bf16 ALiBi bias would round 500 to 2 units."""
    q, k, v = qkv(1, 2, 2, 9, 1000, 64, "cpu", torch.bfloat16)
    slopes = torch.tensor([0.5, 0.25])
    out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_core.AlibiBias(slopes, 9, 1000))
    assert_close(out, attention_fp64(q, k, v, slopes=slopes), torch.bfloat16)


def test_dead_rows_of_a_reused_mask_follow_its_changes():
    """The torch route zeros rows whose mask keeps no key; the answer is remembered per mask tensor, and an
    in-place change of the mask (a new version) is seen on the next call."""
    q, k, v = qkv(1, 2, 2, 6, 5, 8, "cpu", torch.float32)
    mask = torch.zeros(1, 2, 6, 5)
    mask[:, :, 1] = float("-inf")  # row 1 sees no key
    with sdpa_core.dispatch_policy("auto"):
        first = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        again = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        assert torch.equal(first, again)
        assert torch.equal(first[:, :, 1], torch.zeros_like(first[:, :, 1]))
        mask[:, :, 1] = 0.0  # row 1 now sees every key, row 3 none
        mask[:, :, 3] = float("-inf")
        changed = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    want = attention_fp64(q, k, v, dense=mask)
    assert torch.equal(changed[:, :, 3], torch.zeros_like(changed[:, :, 3]))
    assert_close(changed[:, :, 1], want[:, :, 1], torch.float32)
    assert not changed.isnan().any()


def test_dead_rows_of_an_inference_mode_mask():
    """A mask made under torch.inference_mode() has no version counter: its dead rows are computed each call."""
    q, k, v = qkv(1, 2, 2, 6, 5, 8, "cpu", torch.float32)
    with torch.inference_mode():
        mask = torch.zeros(1, 2, 6, 5)
        mask[:, :, 2] = float("-inf")
        out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        mask[:, :, 2] = 0.0
        again = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.equal(out[:, :, 2], torch.zeros_like(out[:, :, 2]))
    assert_close(again, attention_fp64(q, k, v, dense=mask), torch.float32)
