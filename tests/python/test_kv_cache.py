"""kv_cache_append against a token-by-token loop, and varlen_attn reading what it wrote."""

import pytest
import torch
from conftest import requires_cuda

import sdpa_core
from sdpa_core import SdpaValueError

DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]


def make_cache(device, pages=12, page_size=4, heads=2, dim=8):
    key_cache = torch.full((pages, page_size, heads, dim), float("nan"), device=device)
    table = torch.randperm(pages, generator=torch.Generator().manual_seed(0))[:9].view(3, 3).to(torch.int32)
    return key_cache, key_cache.clone(), table.to(device)


@pytest.mark.parametrize("device", DEVICES)
def test_matches_a_token_by_token_loop(device):
    key_cache, value_cache, table = make_cache(device)
    held = torch.tensor([3, 0, 6], dtype=torch.int32, device=device)
    new = [2, 5, 0]
    cu = torch.tensor([0, 2, 7, 7], dtype=torch.int32, device=device)
    key, value = torch.randn(7, 2, 8, device=device), torch.randn(7, 2, 8, device=device)
    expected_k, expected_v = key_cache.clone(), value_cache.clone()
    for b in range(3):
        for t in range(new[b]):
            pos = int(held[b]) + t
            page, slot = int(table[b, pos // 4]), pos % 4
            expected_k[page, slot], expected_v[page, slot] = key[cu[b] + t], value[cu[b] + t]
    lengths = sdpa_core.kv_cache_append(key_cache, value_cache, table, held, key, value, cu)
    assert lengths.tolist() == [5, 5, 6] and lengths.dtype == torch.int32
    assert torch.equal(key_cache.nan_to_num(-7), expected_k.nan_to_num(-7))
    assert torch.equal(value_cache.nan_to_num(-7), expected_v.nan_to_num(-7))


@pytest.mark.parametrize("device", DEVICES)
def test_varlen_attn_reads_what_was_appended(device):
    """Prefill 5 tokens, then 3 decode steps of one token: each step's output equals attention over the
    tokens so far, computed from a contiguous copy."""
    key_cache, value_cache, table = make_cache(device)
    held = torch.zeros(1, dtype=torch.int32, device=device)
    table = table[:1]
    keys, values = torch.randn(8, 2, 8, device=device), torch.randn(8, 2, 8, device=device)
    steps = [(0, 5), (5, 6), (6, 7), (7, 8)]
    for start, end in steps:
        cu_new = torch.tensor([0, end - start], dtype=torch.int32, device=device)
        held = sdpa_core.kv_cache_append(key_cache, value_cache, table, held, keys[start:end], values[start:end], cu_new)
        q = torch.randn(end - start, 4, 8, device=device)
        out = sdpa_core.varlen_attn(q, key_cache, value_cache, cu_new, None, end - start, end, enable_gqa=True,
                                    seqused_k=held, block_table=table, causal=sdpa_core.CausalVariant.LOWER_RIGHT)
        ref = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(0, 1)[None], keys[:end].transpose(0, 1)[None], values[:end].transpose(0, 1)[None],
            attn_mask=torch.nn.attention.bias.causal_lower_right(end - start, end), enable_gqa=True)
        torch.testing.assert_close(out, ref[0].transpose(0, 1), atol=1e-5, rtol=1e-5)


def test_bad_arguments_name_the_argument():
    key_cache, value_cache, table = make_cache("cpu")
    held = torch.zeros(3, dtype=torch.int32)
    cu = torch.tensor([0, 1, 1, 1], dtype=torch.int32)
    key = torch.randn(1, 2, 8)
    with pytest.raises(SdpaValueError, match="cu_seq_new"):
        sdpa_core.kv_cache_append(key_cache, value_cache, table, held, key, key, cu[:3])
    with pytest.raises(SdpaValueError, match=r"\(T, Hkv, D\)"):
        sdpa_core.kv_cache_append(key_cache, value_cache, table, held, key[:, :1], key[:, :1], cu)
    with pytest.raises(SdpaValueError, match="cache_seqlens must be an int32"):
        sdpa_core.kv_cache_append(key_cache, value_cache, table, held.long(), key, key, cu)
