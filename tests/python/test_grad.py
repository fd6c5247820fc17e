"""Gradients of q, k, v and of a float TensorBias against the float64 oracle's autograd gradients.

CPU runs float32 and float64; CUDA runs bfloat16 and float16 (skipped without a GPU). sdpa_core hands
calls that need gradients to PyTorch's SDPA; these tests hold whatever path it takes to the oracle.

Tolerances: float32 and float64 compare against a fixed fraction of the gradient's largest magnitude. Half
precision uses the rule FlashAttention's tests use: the error may be at most twice that of plain arithmetic
in the same dtype (``oracle.attention_lowp_grads``), plus one rounding step of the largest value.
"""

import pytest
import torch
from cases import BIASES
from conftest import requires_cuda
from layouts import describe, make_qkv
from oracle import assert_close, attention_fp64_grads, attention_lowp_grads

import sdpa_core

DEVICE_DTYPES = [
    pytest.param("cpu", torch.float32, id="cpu-fp32"),
    pytest.param("cpu", torch.float64, id="cpu-fp64"),
    pytest.param("cuda", torch.bfloat16, marks=requires_cuda, id="cuda-bf16"),
    pytest.param("cuda", torch.float16, marks=requires_cuda, id="cuda-fp16"),
]

# name -> (heads_q, heads_kv, layout): plain multi-head, and grouped-query heads in strided layouts
VARIANTS = {
    "mha": (3, 3, "contiguous"),
    "gqa_bshd": (4, 2, "bshd"),
    "gqa_packed": (4, 1, "packed"),
}
SIZES = [(1, 1), (1, 17), (17, 113), (113, 17), (113, 113)]
BATCH, DIM = 2, 64

REL_TOL = {torch.float64: 1e-10, torch.float32: 1e-4}  # x max(1, max |reference|)
ROUNDING = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}  # x max(1, max |reference|)
_HALF = (torch.bfloat16, torch.float16)


def _grad_out(shape, device, dtype):
    return torch.randn(shape, dtype=torch.float32).to(device=device, dtype=dtype)


def _grad_error(what, got, ref, lowp, dtype) -> str:
    """"" when ``got`` is close enough to the oracle's ``ref``, else what is wrong."""
    if got is None:
        return f"d{what} is None"
    got64 = got.detach().to("cpu", torch.float64)
    if got64.shape != ref.shape:
        return f"d{what}: shape {tuple(got64.shape)} != {tuple(ref.shape)}"
    if not torch.isfinite(got64).all():
        return f"d{what} has NaN or inf"
    err = (got64 - ref).abs().max().item() if ref.numel() else 0.0
    magnitude = max(1.0, ref.abs().max().item() if ref.numel() else 0.0)
    if dtype in _HALF:
        lowp_err = (lowp.detach().to("cpu", torch.float64) - ref).abs().max().item() if ref.numel() else 0.0
        tol = 2.0 * lowp_err + ROUNDING[dtype] * magnitude
    else:
        tol = REL_TOL[dtype] * magnitude
    return "" if err <= tol else f"d{what}: max abs error {err:.3g} > tolerance {tol:.3g} for {dtype}"


def _assert_grad_close(what, got, ref, lowp, dtype, context):
    problem = _grad_error(what, got, ref, lowp, dtype)
    assert not problem, f"{problem} ({context})"


def _check_against_oracle(q, k, v, out, inputs, grads, grad_out, oracle_kwargs, dtype, context):
    """Output and every gradient against the oracle; rows with every key masked: exactly zero. Every
    problem found is reported together."""
    ref_out, ref_grads, dead = attention_fp64_grads(q, k, v, grad_out, **oracle_kwargs)
    lowp_grads = attention_lowp_grads(q, k, v, grad_out, **oracle_kwargs)[1] if dtype in _HALF else {}
    problems = []
    try:
        assert_close(out, ref_out, dtype)
    except AssertionError as error:
        problems.append(f"output: {error}")
    names = ["q", "k", "v", "dense"][:len(inputs)]
    problems += [_grad_error(name, got, ref_grads[name], lowp_grads.get(name), dtype)
                 for name, got in zip(names, grads)]
    if dead.any():
        rows = dead.expand(*out.shape[:-1], 1).squeeze(-1)
        if not torch.equal(out.detach().cpu()[rows].float(), torch.zeros(int(rows.sum()), out.shape[-1])):
            problems.append("fully masked rows must output 0")
        if not torch.equal(grads[0].detach().cpu()[rows].float(), torch.zeros(int(rows.sum()), q.shape[-1])):
            problems.append("fully masked rows must get zero dq")
    problems = [p for p in problems if p]
    assert not problems, "; ".join(problems) + f" ({context})"


def _run(name, variant, seq_q, seq_kv, device, dtype, bias_requires_grad=False):
    heads_q, heads_kv, layout = VARIANTS[variant]
    q, k, v = make_qkv(BATCH, heads_q, heads_kv, seq_q, seq_kv, DIM, layout, device, dtype, requires_grad=True)
    mask, is_causal, oracle_kwargs = BIASES[name](BATCH, heads_q, seq_q, seq_kv, device, dtype)
    inputs = [q, k, v]
    if bias_requires_grad:
        inputs.append(oracle_kwargs["dense"].requires_grad_(True))  # the tensor the TensorBias holds
    out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                                 enable_gqa=heads_q != heads_kv)
    grad_out = _grad_out(out.shape, device, dtype)
    grads = torch.autograd.grad(out, inputs, grad_out)
    context = (f"bias={name} variant={variant} Sq={seq_q} Skv={seq_kv} {dtype} on {device}; "
               f"q {describe(q)}, k {describe(k)}")
    _check_against_oracle(q, k, v, out, inputs, grads, grad_out, oracle_kwargs, dtype, context)


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("seq_q,seq_kv", SIZES)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("name", sorted(BIASES))
def test_qkv_grads_match_oracle(name, variant, seq_q, seq_kv, device, dtype):
    _run(name, variant, seq_q, seq_kv, device, dtype)


FLOAT_BIASES = sorted(n for n in BIASES if n.startswith("dense_float"))


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("seq_q,seq_kv", [(1, 17), (17, 113), (113, 17)])
@pytest.mark.parametrize("name", FLOAT_BIASES)
def test_float_bias_grad_matches_oracle(name, seq_q, seq_kv, device, dtype):
    """A float TensorBias that requires grad gets the oracle's gradient, summed over its broadcast dims."""
    _run(name, "gqa_bshd", seq_q, seq_kv, device, dtype, bias_requires_grad=True)


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("shape", ["sq_skv", "b1_sq_skv", "1h_1_skv", "bh_sq_skv", "bh_sq_1"])
def test_bias_grad_broadcast_shapes(shape, device, dtype):
    batch, heads, seq_q, seq_kv = 2, 4, 17, 33
    full = {"sq_skv": (seq_q, seq_kv), "b1_sq_skv": (batch, 1, seq_q, seq_kv), "1h_1_skv": (1, heads, 1, seq_kv),
            "bh_sq_skv": (batch, heads, seq_q, seq_kv), "bh_sq_1": (batch, heads, seq_q, 1)}[shape]
    q, k, v = make_qkv(batch, heads, heads, seq_q, seq_kv, DIM, "contiguous", device, dtype, requires_grad=True)
    bias = torch.randn(full, dtype=torch.float32).to(device=device, dtype=dtype).requires_grad_(True)
    out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_core.TensorBias(bias))
    grad_out = _grad_out(out.shape, device, dtype)
    grads = torch.autograd.grad(out, (q, k, v, bias), grad_out)
    assert grads[3].shape == bias.shape
    _check_against_oracle(q, k, v, out, [q, k, v, bias], grads, grad_out, {"dense": bias}, dtype,
                          f"bias shape {full}, {dtype} on {device}")


def _masking_value(how, dtype):
    """(bias dtype, value) that masks a key: -inf, or a finfo.min below oracle.MASKED_BELOW. float16's own
    finfo.min (-65504) is an ordinary number, so float16 queries get a float32 bias holding float32's."""
    if how == "neg_inf":
        return dtype, float("-inf")
    bias_dtype = torch.float32 if dtype == torch.float16 else dtype
    return bias_dtype, torch.finfo(bias_dtype).min


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("how", ["bool", "neg_inf", "finfo_min"])
@pytest.mark.parametrize("is_causal", [False, True], ids=["no_causal", "is_causal"])
def test_fully_masked_rows_output_zero_and_get_zero_grads(how, is_causal, device, dtype):
    batch, heads_q, heads_kv, seq_q, seq_kv = 2, 4, 2, 17, 33
    dead_rows = [0, 5, seq_q - 1]
    q, k, v = make_qkv(batch, heads_q, heads_kv, seq_q, seq_kv, DIM, "bshd", device, dtype, requires_grad=True)
    masked = torch.rand(batch, 1, seq_q, seq_kv) < 0.3
    masked[:, :, :, 0] = False  # every other row keeps key 0, which is_causal keeps too: no row dies by chance
    masked[:, :, dead_rows, :] = True
    masked = masked.to(device)
    inputs = [q, k, v]
    if how == "bool":
        bias = ~masked
    else:
        bias_dtype, value = _masking_value(how, dtype)
        bias = torch.randn(masked.shape, dtype=torch.float32).to(device=device, dtype=bias_dtype)
        bias = bias.masked_fill(masked, value).requires_grad_(True)
        inputs.append(bias)
    out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_core.TensorBias(bias), is_causal=is_causal,
                                                 enable_gqa=True)
    grad_out = _grad_out(out.shape, device, dtype)
    grads = torch.autograd.grad(out, inputs, grad_out)
    for name, g in zip("qkvb", grads):
        assert torch.isfinite(g.float()).all(), f"d{name} has NaN or inf"
    assert torch.equal(out.detach()[:, :, dead_rows].float().cpu(), torch.zeros(batch, heads_q, len(dead_rows), DIM))
    assert torch.equal(grads[0][:, :, dead_rows].float().cpu(), torch.zeros(batch, heads_q, len(dead_rows), DIM))
    if how != "bool":
        assert torch.equal(grads[3][:, :, dead_rows].float().cpu(), torch.zeros(batch, 1, len(dead_rows), seq_kv))
    oracle_kwargs = {"dense": bias, "causal": "upper_left" if is_causal else None}
    _check_against_oracle(q, k, v, out, inputs, grads, grad_out, oracle_kwargs, dtype,
                          f"rows {dead_rows} masked by {how}, is_causal={is_causal}, {dtype} on {device}")


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_grads_accumulate_into_a_packed_projection(device, dtype):
    """q, k, v as views of one packed QKV leaf (a fused projection): .backward() fills its .grad in place."""
    batch, heads, seq = 2, 4, 33
    packed = torch.randn(batch, seq, 3 * heads, DIM).to(device=device, dtype=dtype).requires_grad_(True)
    q, k, v = packed.transpose(1, 2).split(heads, dim=1)
    slopes = sdpa_core.alibi_slopes(4, device=device)
    bias = sdpa_core.AlibiBias(slopes, seq, seq, causal=sdpa_core.CausalVariant.UPPER_LEFT)
    out = sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    grad_out = _grad_out(out.shape, device, dtype)
    out.backward(grad_out)
    _, ref, _ = attention_fp64_grads(q, k, v, grad_out, slopes=slopes, causal="upper_left")
    lowp = attention_lowp_grads(q, k, v, grad_out, slopes=slopes, causal="upper_left")[1] if dtype in _HALF else {}
    got = packed.grad.transpose(1, 2)  # (B, 3H, S, D): q heads, then k heads, then v heads
    for name, got_part in zip("qkv", got.split(heads, dim=1)):
        _assert_grad_close(name, got_part, ref[name], lowp.get(name), dtype, f"packed QKV, {dtype} on {device}")
