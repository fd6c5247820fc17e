"""Hugging Face transformers on sdpa_core (sdpa_core.integrations.transformers): the same random-weight
Llama-style model with attn_implementation "sdpa" and "sdpa_core" must give the same tokens, logits and
gradients, under torch.compile too, and causal masks must reach sdpa_core as bias objects."""

import os
import subprocess
import sys

import pytest
import torch

from conftest import requires_cuda

transformers = pytest.importorskip("transformers", reason="transformers is not installed "
                                   "(pip install sdpa_core[transformers]; scripts/install_deps.sh installs it)")

import sdpa_core  # noqa: E402
import sdpa_core.integrations.transformers as sdpa_hf  # noqa: E402
from sdpa_core import CausalBias, CausalVariant, TensorBias  # noqa: E402

IMPLS = ("sdpa", sdpa_hf.register())
PAD = 0


def make_model(impl, device="cpu", dtype=torch.float32, layers=2):
    # GQA (4 query heads, 2 KV heads) so the grouped path is exercised.
    cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=256, pad_token_id=PAD, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(1234)  # identical weights for both implementations
    model = transformers.LlamaForCausalLM(cfg).to(device=device, dtype=dtype)
    model.set_attn_implementation(impl)
    return model


def left_padded_batch(device="cpu", lengths=(13, 9, 4)):
    gen = torch.Generator().manual_seed(7)
    ids = torch.full((len(lengths), max(lengths)), PAD, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, -n:] = torch.randint(3, 97, (n,), generator=gen)
        mask[row, -n:] = 1
    return ids.to(device), mask.to(device)


def generate(impl, device="cpu", dtype=torch.float32, new_tokens=12):
    model = make_model(impl, device, dtype).eval()
    ids, mask = left_padded_batch(device)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False,
                             eos_token_id=None, output_logits=True, return_dict_in_generate=True)
    return out.sequences, torch.stack(out.logits).float()


@pytest.fixture
def spy(monkeypatch):
    """Records (Sq, Skv, attn_mask, is_causal) of every sdpa_core call the model makes."""
    calls = []
    orig = sdpa_core.scaled_dot_product_attention

    def record(query, key, value, attn_mask=None, **kwargs):
        calls.append((query.shape[2], key.shape[2], attn_mask, kwargs.get("is_causal", False)))
        return orig(query, key, value, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(sdpa_core, "scaled_dot_product_attention", record)
    return calls


def test_generate_left_padded_matches_sdpa():
    ref_tokens, ref_logits = generate("sdpa")
    tokens, logits = generate("sdpa_core")
    assert torch.equal(tokens, ref_tokens)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)


def test_training_step_gradients_match():
    ids, mask = left_padded_batch()
    labels = ids.masked_fill(mask == 0, -100)  # no loss on padding
    grads, losses = {}, {}
    for impl in IMPLS:
        model = make_model(impl).train()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        losses[impl] = loss.detach()
        grads[impl] = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    torch.testing.assert_close(losses["sdpa_core"], losses["sdpa"], rtol=1e-5, atol=1e-6)
    assert grads["sdpa_core"].keys() == grads["sdpa"].keys() and len(grads["sdpa"]) > 0
    for name, ref in grads["sdpa"].items():
        torch.testing.assert_close(grads["sdpa_core"][name], ref, rtol=1e-4, atol=1e-5, msg=name)


def test_compiled_forward_matches():
    ids, mask = left_padded_batch()
    torch._dynamo.reset()
    with torch.no_grad():
        ref = make_model("sdpa").eval()(input_ids=ids, attention_mask=mask).logits
        model = make_model("sdpa_core").eval()
        compiled = torch.compile(model.forward, backend="aot_eager", fullgraph=False)
        out = compiled(input_ids=ids, attention_mask=mask).logits
    keep = mask.bool()  # rows of padding tokens attend to nothing; only real tokens are compared
    torch.testing.assert_close(out[keep], ref[keep], rtol=1e-4, atol=1e-4)


def test_causal_masks_reach_sdpa_core_as_bias_objects(spy):
    """Without padding: prefill is upper-left (is_causal, no tensor), decode with a cache a lower-right
    CausalBias; nothing Sq x Skv is handed over."""
    model = make_model("sdpa_core").eval()
    ids = torch.randint(3, 97, (2, 10))
    with torch.no_grad():
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False,
                       eos_token_id=None)
    prefill = [c for c in spy if c[0] > 1]
    decode = [c for c in spy if c[0] == 1]
    assert prefill and decode
    assert all(mask is None and causal for _, _, mask, causal in prefill)
    for seq_q, seq_kv, mask, causal in decode:
        assert isinstance(mask, CausalBias) and mask.variant == CausalVariant.LOWER_RIGHT
        assert (mask.seq_len_q, mask.seq_len_kv) == (seq_q, seq_kv) and seq_kv > seq_q and not causal


def test_padding_reaches_sdpa_core_as_key_padding(spy):
    """With left padding: a (B, 1, 1, Skv) key-padding TensorBias, never (B, 1, Sq, Skv); causal on
    prefill through is_causal."""
    model = make_model("sdpa_core").eval()
    ids, mask = left_padded_batch()
    with torch.no_grad():
        model.generate(ids, attention_mask=mask, max_new_tokens=3, do_sample=False, eos_token_id=None)
    assert spy
    for seq_q, seq_kv, bias, causal in spy:
        assert isinstance(bias, TensorBias) and tuple(bias.bias.shape) == (ids.shape[0], 1, 1, seq_kv)
        assert causal == (seq_q > 1)


def test_chunk_with_cache_and_padding_is_lower_right():
    """1 < Sq < Skv with padding (a second chunk on a cache): one bias, padding plus lower-right causal,
    equal to transformers' own materialized mask."""
    ids, mask = left_padded_batch()
    split = 8
    outs = {}
    for impl in IMPLS:
        model = make_model(impl).eval()
        with torch.no_grad():
            first = model(input_ids=ids[:, :split], attention_mask=mask[:, :split], use_cache=True)
            outs[impl] = model(input_ids=ids[:, split:], attention_mask=mask,
                               past_key_values=first.past_key_values).logits
    keep = mask[:, split:].bool()
    torch.testing.assert_close(outs["sdpa_core"][keep], outs["sdpa"][keep], rtol=1e-4, atol=1e-4)
    pattern = sdpa_hf.build_mask(3, 5, 13, q_offset=8, kv_offset=0, attention_mask=mask.bool())
    bias, causal = sdpa_hf.to_sdpa_core_mask(pattern, 5, 13, False)
    assert isinstance(bias, sdpa_hf.PaddedLowerRight) and not causal
    expected = transformers.masking_utils.sdpa_mask(batch_size=3, q_length=5, kv_length=13, q_offset=8,
                                                    attention_mask=mask.bool(), allow_is_causal_skip=False)
    assert torch.equal(bias.materialize().expand_as(expected), expected)


def test_other_patterns_pass_through_as_tensor_bias():
    """A sliding window is not a plain causal pattern: transformers' own mask goes on as a TensorBias."""
    from transformers.masking_utils import sliding_window_causal_mask_function
    mask = sdpa_hf.build_mask(2, 6, 6, mask_function=sliding_window_causal_mask_function(3),
                                 allow_is_causal_skip=False)
    assert isinstance(mask, torch.Tensor) and tuple(mask.shape) == (2, 1, 6, 6)
    bias, causal = sdpa_hf.to_sdpa_core_mask(mask, 6, 6, False)
    assert isinstance(bias, TensorBias) and bias.bias is mask and not causal


def test_core_import_does_not_import_transformers():
    code = "import sys, sdpa_core; assert 'transformers' not in sys.modules, 'transformers imported'"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_generate_matches_sdpa_gpu(dtype):
    """Low precision: tokens may diverge after a near-tie, so compare the first step's logits tightly and
    the token agreement loosely."""
    ref_tokens, ref_logits = generate("sdpa", "cuda", dtype)
    tokens, logits = generate("sdpa_core", "cuda", dtype)
    torch.testing.assert_close(logits[0], ref_logits[0], rtol=2e-2, atol=2e-2)
    agree = (tokens == ref_tokens).float().mean().item()
    assert agree > 0.9, f"only {agree:.0%} of the tokens agree"


@requires_cuda
def test_training_step_gradients_match_gpu():
    """bf16 gradients with "sdpa" and "sdpa_core", each against the same bf16-rounded weights run in float32
    ("sdpa"): sdpa_core's error is at most twice torch's plus a small floor (STYLE.md's fair bf16 rule). Two
    bf16 runs differ from each other by their rounding noise alone, which is not a tolerance either meets."""
    ids, mask = left_padded_batch("cuda")
    labels = ids.masked_fill(mask == 0, -100)

    def grads_of(impl, dtype):
        model = make_model(impl, "cuda", torch.bfloat16).to(dtype).train()
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        return {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}

    reference = grads_of("sdpa", torch.float32)
    errors = {impl: {} for impl in IMPLS}
    for impl in IMPLS:
        for name, grad in grads_of(impl, torch.bfloat16).items():
            ref = reference[name]
            errors[impl][name] = ((grad - ref).norm() / ref.norm().clamp_min(1e-6)).item()
    for name, torch_err in errors["sdpa"].items():
        ours = errors[IMPLS[1]][name]
        assert ours <= 2 * torch_err + 1e-2, f"{name}: relative gradient error {ours:.3g} vs torch's {torch_err:.3g}"
