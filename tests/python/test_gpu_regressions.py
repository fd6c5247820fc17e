"""Reported GPU bugs, each pinned by its repro and by the family of inputs around it.

* finfo.min masks: an additive bias value below oracle.MASKED_BELOW (-2.35e38; torch.finfo(bfloat16).min
  and torch.finfo(float32).min are) acts exactly like -inf; a row with every key masked outputs zeros.
  torch.finfo(float16).min (-65504) is an ordinary number.
* Misaligned and oddly strided q/k/v (data_ptr off 16-byte alignment, sequence strides not a multiple of 8
  elements) give the oracle's answer with every bias, and still run a fused kernel.
* dispatch_policy("own" / "auto") pins sdpa_core's kernels or lets faster torch kernels take plain calls.
"""

import pytest
import torch
from cases import BIASES
from conftest import qkv, requires_cuda
from layouts import describe, make_qkv
from oracle import MASKED_BELOW, assert_close, attention_fp64, attention_fp64_masked

import sdpa_core

pytestmark = requires_cuda

HALF = [torch.bfloat16, torch.float16]
DIMS = [64, 128, 256]


def _poison_allocator(nbytes):
    """Fill the caching allocator's next block with NaN so an unwritten output element shows up."""
    junk = torch.full((nbytes // 4 + 1024,), float("nan"), device="cuda")
    del junk


def _run(q, k, v, **kwargs):
    """sdpa_core's output, computed into memory that held NaN."""
    _poison_allocator(q.shape[0] * q.shape[1] * q.shape[2] * v.shape[-1] * q.element_size())
    return sdpa_core.scaled_dot_product_attention(q, k, v, **kwargs)


def _path(text: str) -> str:
    """The "path: ..." line of an explain() text: which code runs the call."""
    return next((line for line in text.splitlines() if line.startswith("path:")), "")


def _runs_fused(text: str) -> bool:
    return _path(text).startswith("path: fused kernel")


def _run_under(policy, q, k, v, context="", **kwargs):
    """(output, explain text) under ``policy``; under "own" explain() must name a fused kernel."""
    with sdpa_core.dispatch_policy(policy):
        text = sdpa_core.explain(q, k, v, **kwargs)
        if policy == "own":
            assert _runs_fused(text), f"{context}\n{text}"
        return _run(q, k, v, **kwargs), text


POLICIES = ["own", "auto"]


def _assert_matches(out, ref, dtype, context):
    """assert_close against the oracle, and rows the oracle zeroes (every key masked) exactly zero."""
    try:
        assert_close(out, ref, dtype)
    except AssertionError as error:
        raise AssertionError(f"{error} ({context})") from None
    dead = (ref == 0).all(dim=-1)
    if dead.any():
        got = out.detach().float().cpu()[dead]
        assert torch.equal(got, torch.zeros_like(got)), f"{int(dead.sum())} fully masked rows are not 0 ({context})"


def _finfo_min_bias(shape, dtype, fraction=0.1, device="cuda"):
    """A normal float bias of ``dtype`` with ``fraction`` of its entries torch.finfo(dtype).min.

    For float16, finfo.min (-65504) is an ordinary number, and a row whose kept keys all held it would be
    a softmax of scores offset by 65504, which float32 arithmetic resolves only to about 2^-8: key 0 (kept
    by every causal variant) never holds it there, so every row keeps one ordinary value.
    test_float16_finfo_min_is_an_ordinary_number checks such a row on its own, with its own tolerance.
    """
    bias = torch.randn(shape, dtype=torch.float32)
    masked = torch.rand(shape) < fraction
    if dtype == torch.float16:
        masked[..., 0] = False
    return bias.to(dtype).masked_fill(masked, torch.finfo(dtype).min).to(device)


# --- finfo.min masks ------------------------------------------------------------------------------------------

FINFO_SIZES = [(1, 1), (1, 17), (17, 113), (113, 17), (257, 300), (300, 512), (1000, 257)]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("is_causal", [False, True], ids=["no_causal", "is_causal"])
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
def test_finfo_min_bias_matches_oracle(dtype, dim, is_causal, policy):
    for seq_q, seq_kv in FINFO_SIZES:
        q, k, v = qkv(2, 4, 2, seq_q, seq_kv, dim, "cuda", dtype)
        bias = _finfo_min_bias((1, 4, seq_q, seq_kv), dtype)
        if dtype == torch.bfloat16:
            bias[:, 1, seq_q // 2] = torch.finfo(dtype).min  # one row of head 1 with every key masked
        context = f"{dtype} d{dim} Sq={seq_q} Skv={seq_kv} is_causal={is_causal} policy {policy}"
        out, text = _run_under(policy, q, k, v, context, attn_mask=sdpa_core.TensorBias(bias), is_causal=is_causal,
                               enable_gqa=True)
        ref = attention_fp64_masked(q, k, v, dense=bias, causal="upper_left" if is_causal else None)
        _assert_matches(out, ref, dtype, f"{context}\n{text}")
        if dtype == torch.bfloat16:
            assert torch.equal(out[:, 1, seq_q // 2].float().cpu(), torch.zeros(2, dim)), context


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("is_causal", [False, True], ids=["no_causal", "is_causal"])
def test_repro_packed_qkv_hd256_head_bias_with_finfo_min(is_causal, policy):
    """Reported: B=2, H=4, Sq=1000, Skv=257, head_dim 256, a (1, H, Sq, Skv) bf16 bias holding finfo.min,
    q/k/v views of a packed (B, S, 3, H, D) projection."""
    batch, heads, seq_q, seq_kv, dim, dtype = 2, 4, 1000, 257, 256, torch.bfloat16
    packed = torch.randn(batch, seq_q, 3, heads, dim, dtype=torch.float32).to("cuda", dtype)
    q, k, v = packed.permute(2, 0, 3, 1, 4)  # each (B, H, S, D), sequence stride 3 * H * D
    k, v = k[:, :, :seq_kv], v[:, :, :seq_kv]
    assert not q.is_contiguous() and q.stride(2) == 3 * heads * dim
    bias = _finfo_min_bias((1, heads, seq_q, seq_kv), dtype)
    context = f"packed QKV repro, is_causal={is_causal}, policy {policy}"
    out, text = _run_under(policy, q, k, v, context, attn_mask=sdpa_core.TensorBias(bias), is_causal=is_causal)
    ref = attention_fp64_masked(q, k, v, dense=bias, causal="upper_left" if is_causal else None)
    _assert_matches(out, ref, dtype, f"{context}\n{text}")


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
def test_repro_gqa_batch_bias_causal_custom_scale(dtype, dim):
    """Reported: B=2, Hq=32, Hkv=4, Sq=Skv=1024, a (B, 1, Sq, Skv) bias holding finfo.min, is_causal,
    scale=0.497, enable_gqa."""
    batch, heads_q, heads_kv, seq, scale = 2, 32, 4, 1024, 0.497
    q, k, v = qkv(batch, heads_q, heads_kv, seq, seq, dim, "cuda", dtype)
    bias = _finfo_min_bias((batch, 1, seq, seq), dtype)
    context = f"GQA repro {dtype} d{dim}"
    out, text = _run_under("own", q, k, v, context, attn_mask=sdpa_core.TensorBias(bias), is_causal=True,
                           scale=scale, enable_gqa=True)
    ref = attention_fp64_masked(q, k, v, dense=bias, causal="upper_left", scale=scale)
    _assert_matches(out, ref, dtype, f"{context}\n{text}")


# (bias dtype, masking value) for bf16 queries: a bf16 bias runs fused; a float32 bias goes through torch
FULL_ROW_MASKS = {
    "bf16_bias_bf16_min": (torch.bfloat16, torch.finfo(torch.bfloat16).min),
    "bf16_bias_fp32_min": (torch.bfloat16, torch.finfo(torch.float32).min),  # rounds to -inf in bf16
    "fp32_bias_fp32_min": (torch.float32, torch.finfo(torch.float32).min),
    "fp32_bias_bf16_min": (torch.float32, torch.finfo(torch.bfloat16).min),
}


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("causal", [None, "is_causal", "lower_right"])
@pytest.mark.parametrize("mask", sorted(FULL_ROW_MASKS))
def test_rows_fully_masked_by_finfo_min_output_zero(mask, causal, policy):
    batch, heads, seq_q, seq_kv, dim = 2, 4, 113, 300, 128
    bias_dtype, value = FULL_ROW_MASKS[mask]
    dead_rows = [0, 1, 56, seq_q - 1]
    q, k, v = qkv(batch, heads, heads, seq_q, seq_kv, dim, "cuda", torch.bfloat16)
    bias = torch.randn(batch, 1, seq_q, seq_kv, dtype=torch.float32)
    bias[torch.rand(bias.shape) < 0.1] = value
    bias[:, :, dead_rows] = value
    bias[1, :, 7, 1:] = value  # a row masked everywhere except key 0, which every causal variant keeps
    bias[1, :, 7, 0] = 0.0
    bias = bias.to(bias_dtype).cuda()
    is_causal = causal == "is_causal"
    oracle_causal = "upper_left" if is_causal else causal
    if causal == "lower_right":  # -inf from the causal mask and finfo.min from the bias, in one tensor
        keep = sdpa_core.causal_lower_right(seq_q, seq_kv).materialize("cuda")
        attn_bias = sdpa_core.TensorBias(bias.masked_fill(~keep, float("-inf")))
    else:
        attn_bias = sdpa_core.TensorBias(bias)
    with sdpa_core.dispatch_policy(policy):  # a float32 bias with bf16 queries runs through torch
        out = _run(q, k, v, attn_mask=attn_bias, is_causal=is_causal)
    ref = attention_fp64_masked(q, k, v, dense=bias, causal=oracle_causal)
    context = f"mask {mask}, causal {causal}, policy {policy}"
    _assert_matches(out, ref, torch.bfloat16, context)
    assert torch.equal(out[:, :, dead_rows].float().cpu(), torch.zeros(batch, heads, len(dead_rows), dim)), context
    assert out[1, :, 7].float().abs().sum() > 0, f"row 7 keeps key 0, yet output 0 ({context})"


@pytest.mark.parametrize("seq_kv", [33, 64], ids=["elementwise", "staged"])
def test_float16_finfo_min_is_an_ordinary_number(seq_kv):
    """-65504 in a float16 bias is a finite offset, not a mask: a row holding it for every key is the softmax
    of its scores. Scores offset by 65504 (x log2 e ~ 94548) carry float32 rounding of ~2^-8, so the
    tolerance here is 3e-2, not float16's 4e-3. 64 keys make 16-byte rows, which the Hopper forward stages
    and adds to the accumulator divided by the scale (-65504 x sqrt(128) there: rounding ~1.4x larger)."""
    q, k, v = qkv(1, 2, 2, 17, seq_kv, 128, "cuda", torch.float16)
    bias = torch.randn(1, 2, 17, seq_kv).half().cuda()
    bias[:, :, 3] = torch.finfo(torch.float16).min
    out = _run(q, k, v, attn_mask=sdpa_core.TensorBias(bias))
    ref = attention_fp64(q, k, v, dense=bias)
    assert MASKED_BELOW < torch.finfo(torch.float16).min
    assert ref[:, :, 3].abs().sum() > 1.0, "the oracle must treat -65504 as a number"
    err = (out.double().cpu() - ref).abs().max().item()
    assert err <= 3e-2, f"max abs error {err:.3g}; row 3: {out[0, 0, 3, :4].tolist()} vs {ref[0, 0, 3, :4].tolist()}"


# --- misaligned and strided inputs ----------------------------------------------------------------------------

@pytest.mark.parametrize("is_causal", [False, True], ids=["no_causal", "is_causal"])
@pytest.mark.parametrize("policy", POLICIES)
def test_repro_misaligned_gqa_fp16_hd256(policy, is_causal):
    """Reported: fp16, Hq=8, Hkv=1, Sq=Skv=17, head_dim 256, q/k/v data_ptr 2 bytes past a 16-byte
    boundary, enable_gqa."""
    q, k, v = make_qkv(1, 8, 1, 17, 17, 256, "misaligned", "cuda", torch.float16)
    assert all(t.data_ptr() % 16 == 2 for t in (q, k, v)), [describe(t) for t in (q, k, v)]
    out, text = _run_under(policy, q, k, v, f"misaligned repro: q {describe(q)}", is_causal=is_causal,
                           enable_gqa=True)
    ref = attention_fp64(q, k, v, causal="upper_left" if is_causal else None)
    _assert_matches(out, ref, torch.float16, f"misaligned repro, policy {policy}: q {describe(q)}\n{text}")


STRIDED_LAYOUTS = ["misaligned", "odd_stride", "kv_cache", "packed", "bshd"]


@pytest.mark.parametrize("layout", STRIDED_LAYOUTS)
@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", sorted(BIASES))
def test_strided_and_misaligned_inputs_every_bias(name, dtype, layout):
    """Every bias with q/k/v in each layout (see layouts.LAYOUTS; unused memory holds NaN). Under the "own"
    policy the fused kernel must run (explain says so) and match the oracle."""
    for seq_q, seq_kv, dim in [(1, 17, 64), (17, 113, 256), (113, 17, 128), (255, 64, 64)]:
        q, k, v = make_qkv(2, 4, 2, seq_q, seq_kv, dim, layout, "cuda", dtype)
        mask, is_causal, oracle_kwargs = BIASES[name](2, 4, seq_q, seq_kv, "cuda", dtype)
        context = f"{name} {layout} {dtype} Sq={seq_q} Skv={seq_kv} d{dim}: q {describe(q)}, k {describe(k)}"
        out, text = _run_under("own", q, k, v, context, attn_mask=mask, is_causal=is_causal, enable_gqa=True)
        _assert_matches(out, attention_fp64(q, k, v, **oracle_kwargs), dtype, context)


# --- dispatch_policy -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["none", "is_causal", "causal_lower_right", "alibi_upper_left", "dense_bool"])
@pytest.mark.parametrize("policy", POLICIES)
def test_dispatch_policy_results_match_oracle(policy, name):
    for dtype in HALF:
        for seq_q, seq_kv in [(1, 17), (113, 113), (1000, 257)]:
            q, k, v = qkv(2, 8, 2, seq_q, seq_kv, 128, "cuda", dtype)
            mask, is_causal, oracle_kwargs = BIASES[name](2, 8, seq_q, seq_kv, "cuda", dtype)
            with sdpa_core.dispatch_policy(policy):
                out = _run(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=True)
            _assert_matches(out, attention_fp64(q, k, v, **oracle_kwargs), dtype,
                            f"policy {policy}, {name}, {dtype}, Sq={seq_q} Skv={seq_kv}")


def _requires_sm90():
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip(f"'auto' routes plain calls to torch's cuDNN kernel on sm90 only; this GPU is "
                    f"sm{''.join(map(str, torch.cuda.get_device_capability()))}")


# batch, heads, seq, head_dim of a plain bf16 training call (no mask, inputs that require grad): "auto" hands
# it to torch on sm90, whose cuDNN forward and backward beat the Hopper backward; "own" runs sdpa_core's fused
# forward and backward. (Plain inference calls at hd64, hd128 and hd256 stay on the Hopper forward.)
AUTO_SHAPE = (2, 16, 1024, 64)


def _training_qkv():
    batch, heads, seq, dim = AUTO_SHAPE
    return [t.requires_grad_() for t in qkv(batch, heads, heads, seq, seq, dim, "cuda", torch.bfloat16)]


def test_dispatch_policy_explain_differs_on_sm90():
    _requires_sm90()
    q, k, v = _training_qkv()
    with sdpa_core.dispatch_policy("auto"):
        auto_text = sdpa_core.explain(q, k, v)
        auto_out = _run(q, k, v)
    with sdpa_core.dispatch_policy("own"):
        own_text = sdpa_core.explain(q, k, v)
        own_out = _run(q, k, v)
    assert "torch" in _path(auto_text).lower() and not _runs_fused(auto_text), auto_text
    assert _runs_fused(own_text), own_text
    ref = attention_fp64(q, k, v)
    _assert_matches(auto_out, ref, torch.bfloat16, f"auto\n{auto_text}")
    _assert_matches(own_out, ref, torch.bfloat16, f"own\n{own_text}")


def test_dispatch_policy_plain_call_sets_it_until_the_next_call():
    _requires_sm90()
    q, k, v = _training_qkv()
    try:
        sdpa_core.dispatch_policy("own")
        assert _runs_fused(sdpa_core.explain(q, k, v))
        with sdpa_core.dispatch_policy("auto"):  # a block overrides the plain call, then gives it back
            assert "torch" in _path(sdpa_core.explain(q, k, v)).lower()
        assert _runs_fused(sdpa_core.explain(q, k, v))
        sdpa_core.dispatch_policy("auto")
        assert "torch" in _path(sdpa_core.explain(q, k, v)).lower()
    finally:
        sdpa_core.dispatch_policy("auto")  # the documented default


@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("is_causal", [False, True])
def test_auto_runs_the_path_explain_names(head_dim, is_causal):
    """A plain call under "auto" runs what explain() names: the fused kernel's output bit for bit, or torch's.
    The no-mask hot path once judged is_causal=True calls as unmasked ones, so at hd64 (where the Hopper forward
    then kept causal calls and torch took unmasked ones) explain() named fwd_sm90 while torch ran the call."""
    _requires_sm90()
    q, k, v = qkv(2, 4, 4, 1024, 1024, head_dim, "cuda", torch.bfloat16)
    with sdpa_core.dispatch_policy("auto"):
        text = sdpa_core.explain(q, k, v, is_causal=is_causal)
        out = _run(q, k, v, is_causal=is_causal)
    if _runs_fused(text):
        with sdpa_core.dispatch_policy("own"):
            expected = _run(q, k, v, is_causal=is_causal)
    else:
        expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    assert torch.equal(out, expected), text


def test_dispatch_policy_rejects_unknown_names():
    with pytest.raises(ValueError, match="own"):
        sdpa_core.dispatch_policy("fastest")


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_mask_broadcast_along_keys_on_the_torch_route(kind):
    """A (Sq, 1) mask with Ev != E (no fused kernel: PyTorch runs it). torch 2.11's CUDA kernel faulted
    (misaligned address) on such a bool mask in the side-by-side sweep; sdpa_core hands it an additive mask
    in 16-byte-aligned rows instead. The output must match the oracle and the CUDA context stay healthy."""
    q, k, _ = qkv(3, 1, 1, 17, 17, 64, "cuda", torch.float16)
    v = torch.randn(3, 1, 17, 8, device="cuda", dtype=torch.float16)
    keep = torch.rand(17, 1, device="cuda") > 0.3
    mask = keep if kind == "bool" else torch.randn(17, 1, device="cuda").to(torch.float16)
    out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_core.TensorBias(mask))
    torch.cuda.synchronize()
    assert_close(out, attention_fp64(q, k, v, dense=mask), torch.float16)
