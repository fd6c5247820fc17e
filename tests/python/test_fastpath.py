"""The eager inference hot path (_fastpath.py): which calls may take it, and on the GPU that a call taking it
gives the checked path's answer, including across a decode loop whose key length grows every step."""

import pytest
import torch
from conftest import qkv, randn, requires_cuda
from oracle import assert_close, attention_fp64

import sdpa_core
from sdpa_core import _fastpath


@pytest.fixture(autouse=True)
def _fresh_routes():
    _fastpath._routes.clear()
    yield
    _fastpath._routes.clear()


@pytest.fixture
def hits(monkeypatch):
    """Counts the calls the hot path answered (a list of 1s), by wrapping _fastpath.attention."""
    answered = []
    inner = _fastpath.attention

    def counting(*args):
        out = inner(*args)
        if out is not None:
            answered.append(1)
        return out
    monkeypatch.setattr(_fastpath, "attention", counting)
    return answered


def _sig(q, k, v, attn_mask=None, is_causal=False, scale=None, enable_gqa=False, dropout_p=0.0):
    return _fastpath.signature(q, k, v, attn_mask, is_causal, scale, enable_gqa, dropout_p)


def test_signature_leaves_out_what_a_decode_loop_changes():
    q, k, v = qkv(2, 4, 2, 1, 100, 64)
    _, k2, v2 = qkv(2, 4, 2, 1, 101, 64)
    mask, mask2 = sdpa_core.causal_lower_right(1, 100), sdpa_core.causal_lower_right(1, 101)
    assert _sig(q, k, v, mask, enable_gqa=True) == _sig(q, k2, v2, mask2, enable_gqa=True)
    assert _sig(q, k, v, mask) != _sig(q, k, v, sdpa_core.causal_upper_left(1, 100))
    assert _sig(q, k, v) != _sig(q, k, v, is_causal=True)
    assert _sig(q, k, v) != _sig(q, k, v, scale=0.5)
    q3 = randn(2, 4, 3, 64)
    assert _sig(q3, k, v) != _sig(q3.transpose(1, 2).contiguous().transpose(1, 2), k, v)  # query strides count
    with sdpa_core.dispatch_policy("own"):
        own = _sig(q, k, v)
    assert own != _sig(q, k, v)


def test_signature_refuses_calls_the_checked_path_must_see():
    q, k, v = qkv(1, 2, 2, 4, 8, 16)
    assert _sig(q, k, v, attn_mask=torch.ones(4, 8, dtype=torch.bool)) is None  # Tensor masks warn
    assert _sig(q, k, v, attn_mask=sdpa_core.TensorBias(torch.zeros(4, 8))) is None
    assert _sig(q, k, v, dropout_p=0.1) is None
    assert _sig(q, k, v, scale=1) is None and _sig(q, k, v, scale=torch.tensor(0.5)) is None
    assert _sig(q, k, v, is_causal=1) is None
    assert _sig(q.requires_grad_(), k, v) is None  # training
    with torch.no_grad():
        assert _sig(q, k, v) is not None  # the same tensors, inference
    slopes = sdpa_core.alibi_slopes(2).requires_grad_()
    assert _sig(q.detach(), k, v, attn_mask=sdpa_core.AlibiBias(slopes, 4, 8)) is None

    class Sub(torch.Tensor):
        pass
    assert _sig(q.detach().as_subclass(Sub), k, v) is None
    assert _sig("query", k, v) is None


def test_cpu_calls_are_learned_as_checked_path_calls():
    q, k, v = qkv(1, 2, 2, 4, 8, 16)
    out = sdpa_core.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert _fastpath._routes == {_sig(q, k, v, is_causal=True): None}
    assert_close(out, attention_fp64(q, k, v, causal="upper_left"), torch.float32)


def test_bad_arguments_still_raise_named_errors_after_a_good_call():
    q, k, v = qkv(1, 2, 2, 4, 8, 16)
    sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_core.causal_lower_right(4, 8))
    with pytest.raises(sdpa_core.SdpaValueError, match="seq_len_kv=9"):
        sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_core.causal_lower_right(4, 9))


# ---- GPU: the hot path runs the kernels ---------------------------------------------------------------------

def _decode_loop(make_mask, steps, hits, dtype=torch.bfloat16, group=4, dim=128, batch=2):
    """Decode steps against a growing key range, each checked against the float64 oracle; returns the outputs."""
    heads_kv = 2
    q = randn(batch, heads_kv * group, 1, dim, device="cuda", dtype=dtype)
    cache_k = randn(batch, heads_kv, 1200, dim, device="cuda", dtype=dtype)
    cache_v = randn(batch, heads_kv, 1200, dim, device="cuda", dtype=dtype)
    for seq_kv in steps:
        k, v = cache_k[:, :, :seq_kv], cache_v[:, :, :seq_kv]  # a view of a preallocated cache, as servers keep it
        mask, oracle_kwargs = make_mask(q, seq_kv)
        out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        assert_close(out, attention_fp64(q, k, v, **oracle_kwargs), dtype)
    return len(hits)


def _lower_right(q, seq_kv):
    return sdpa_core.causal_lower_right(1, seq_kv), {"causal": "lower_right"}


def _alibi(q, seq_kv):
    slopes = sdpa_core.alibi_slopes(q.shape[1]).cuda()
    mask = sdpa_core.AlibiBias(slopes, 1, seq_kv, causal=sdpa_core.CausalVariant.LOWER_RIGHT)
    return mask, {"causal": "lower_right", "slopes": slopes}


@requires_cuda
@pytest.mark.parametrize("make_mask", [_lower_right, _alibi], ids=["lower_right", "alibi"])
@pytest.mark.parametrize("policy", ["own", "auto"])
def test_gpu_decode_loop_takes_the_hot_path_from_the_second_step(make_mask, policy, hits):
    steps = [17, 18, 113, 1000, 1001]
    with torch.no_grad(), sdpa_core.dispatch_policy(policy):
        answered = _decode_loop(make_mask, steps, hits)
    assert answered == len(steps) - 1  # the first call learns the route


@requires_cuda
def test_gpu_hot_path_reads_each_calls_slopes():
    q, k, v = qkv(1, 4, 4, 1, 300, 64, "cuda", torch.bfloat16)
    outs = []
    for slopes in (sdpa_core.alibi_slopes(4).cuda(), torch.rand(4, device="cuda")):
        mask = sdpa_core.AlibiBias(slopes, 1, 300)
        outs.append(sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask))
        assert_close(outs[-1], attention_fp64(q, k, v, slopes=slopes), torch.bfloat16)
    assert not torch.equal(outs[0], outs[1])


@requires_cuda
def test_gpu_misaligned_key_on_a_learned_signature_takes_the_checked_path(hits):
    q, k, v = qkv(1, 4, 4, 1, 64, 64, "cuda", torch.bfloat16)
    sdpa_core.scaled_dot_product_attention(q, k, v, is_causal=True)
    sdpa_core.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert len(hits) == 1
    wide = randn(1, 4, 64, 65, device="cuda", dtype=torch.bfloat16)
    k_odd = wide[..., 1:]  # 2-byte offset: the checked path copies it first
    out = sdpa_core.scaled_dot_product_attention(q, k_odd, v, is_causal=True)
    assert len(hits) == 1
    assert_close(out, attention_fp64(q, k_odd, v, causal="upper_left"), torch.bfloat16)


@requires_cuda
def test_gpu_training_calls_never_take_the_hot_path(hits):
    q, k, v = qkv(1, 2, 2, 16, 64, 64, "cuda", torch.bfloat16)
    q.requires_grad_(True)
    for _ in range(2):
        out = sdpa_core.scaled_dot_product_attention(q, k, v, is_causal=True)
        out.float().sum().backward()
    assert not hits and out.grad_fn is not None


@requires_cuda
def test_gpu_learned_route_follows_the_policy(hits):
    q, k, v = qkv(1, 2, 2, 1, 256, 128, "cuda", torch.bfloat16)
    with torch.no_grad():
        for policy in ("own", "auto", "own", "auto"):
            with sdpa_core.dispatch_policy(policy):
                out = sdpa_core.scaled_dot_product_attention(q, k, v)
            assert_close(out, attention_fp64(q, k, v), torch.bfloat16)
    assert len(hits) == 2 and len(_fastpath._routes) == 2


def test_kept_workspace_reads_the_stream_from_its_field():
    from sdpa_core import _kernels
    fields = _kernels.problem_fields(1, (1, 2, 3, 4, 5, 6), [(7, 8, 9, 10)] * 4, 11, 12345, 13)
    assert len(fields) == 32 and fields[_kernels._STREAM_FIELD] == 12345


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU a kernel runs: test_gpu_kept_workspace_* cover it")
def test_forward_in_workspace_without_a_gpu_gives_the_reason():
    from sdpa_core import _C, _kernel_bias, _kernels
    q = randn(1, 2, 1, 64, dtype=torch.bfloat16)
    reason, needed = _C.forward_in_workspace(_kernels.problem_args(q, q, q, q), 0.125,
                                             _kernels.bias_args(_kernel_bias.NO_MASK, q, q), 0, 0)
    assert needed == 0 and ("without CUDA" in reason or "no CUDA device" in reason), reason


@requires_cuda
def test_gpu_kept_workspace_grows_and_is_kept_per_stream():
    from sdpa_core import _kernels
    _kernels._workspaces.clear()
    q = randn(2, 8, 1, 128, device="cuda", dtype=torch.bfloat16)
    cache = randn(2, 2, 8192, 128, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        for seq_kv in (64, 8192):  # one key tile (no split, no workspace), then many parts
            k = cache[:, :, :seq_kv]
            out = sdpa_core.scaled_dot_product_attention(q, k, k, enable_gqa=True)
            assert_close(out, attention_fp64(q, k, k), torch.bfloat16)
        assert len(_kernels._workspaces) == 1
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            out_side = sdpa_core.scaled_dot_product_attention(q, cache, cache, enable_gqa=True)
        torch.cuda.current_stream().wait_stream(side)
        assert len(_kernels._workspaces) == 2
        assert_close(out_side, attention_fp64(q, cache, cache), torch.bfloat16)


@requires_cuda
def test_gpu_decode_in_a_cuda_graph_uses_a_workspace_of_its_own():
    from sdpa_core import _kernels
    q = randn(2, 8, 1, 128, device="cuda", dtype=torch.bfloat16)
    k = randn(2, 2, 4096, 128, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        sdpa_core.scaled_dot_product_attention(q, k, k, enable_gqa=True)  # warm-up: learns the route
        kept = {key: id(buffer) for key, buffer in _kernels._workspaces.items()}
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = sdpa_core.scaled_dot_product_attention(q, k, k, enable_gqa=True)
        assert {key: id(buffer) for key, buffer in _kernels._workspaces.items()} == kept
        q.copy_(randn(2, 8, 1, 128, device="cuda", dtype=torch.bfloat16))
        graph.replay()
        torch.cuda.synchronize()
    assert_close(out, attention_fp64(q, k, k), torch.bfloat16)


@requires_cuda
def test_gpu_prefill_with_more_tiles_than_sms_matches_eager_and_in_a_cuda_graph():
    # On an H100 the Hopper forward schedules these persistently, its tile counter in the kept workspace
    # (eager) or in a workspace of the graph's own (captured); elsewhere one block per tile. Either way the
    # answer is the fp64 reference's, rows that see no key included (lower-right, Sq > Skv).
    from sdpa_core import _kernels
    q = randn(1, 12, 1999, 128, device="cuda", dtype=torch.bfloat16)
    k = randn(1, 12, 1999, 128, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        for causal in (False, True):
            out = sdpa_core.scaled_dot_product_attention(q, k, k, is_causal=causal)
            assert_close(out, attention_fp64(q, k, k, causal="upper_left" if causal else None), torch.bfloat16)
        short = k[:, :, :700]
        out = sdpa_core.scaled_dot_product_attention(q, short, short, attn_mask=sdpa_core.causal_lower_right(1999, 700))
        expected = attention_fp64(q, short, short, causal="lower_right")
        assert_close(out, expected, torch.bfloat16)
        assert not out[:, :, :1299].any(), "rows that see no key are 0"
        text = sdpa_core.explain(q, k, k, is_causal=True)
        if "fwd_sm90" in text:  # the Hopper forward says how its blocks take tiles
            assert "note: tiles of 128 query rows" in text and "persistent" in text, text
        kept = {key: id(buffer) for key, buffer in _kernels._workspaces.items()}
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = sdpa_core.scaled_dot_product_attention(q, k, k, is_causal=True)
        assert {key: id(buffer) for key, buffer in _kernels._workspaces.items()} == kept
        for _ in range(2):  # a replay must find its counter zeroed again
            q.copy_(randn(1, 12, 1999, 128, device="cuda", dtype=torch.bfloat16))
            graph.replay()
            torch.cuda.synchronize()
            assert_close(captured, attention_fp64(q, k, k, causal="upper_left"), torch.bfloat16)
