"""Hugging Face transformers on sdpa_core: ``attn_implementation="sdpa_core"``.

    import sdpa_core.integrations.transformers as sdpa_hf
    sdpa_hf.register()                                   # once, before building the model
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa_core")

``register`` adds two functions under one name: an attention function (``AttentionInterface``) that calls
``sdpa_core.scaled_dot_product_attention``, and a mask function (``AttentionMaskInterface``) that builds
what the model later hands to it.

How a causal pattern is recognized, and why this way: transformers' ``create_causal_mask`` calls the mask
function registered under the model's ``attn_implementation`` with everything the pattern is made of:
``mask_function`` (``causal_mask_function`` for a plain causal mask; any overlay such as a sliding window,
packed sequences or an or/and mask arrives as a different, wrapped function), ``q_offset``/``kv_offset``
(from the KV cache) and the 2-D padding mask. So the pattern is known *before* any Sq x Skv tensor exists,
by an identity test on ``mask_function`` and two integer comparisons, with no data-dependent scan of a
materialized mask. (Recognizing the pattern afterwards in the 4-D tensor would need a full read of it and a
device sync per call, and would not survive ``torch.compile``.) Registering a mask function is required
anyway: transformers builds no mask at all for an ``attn_implementation`` without one.

For a plain causal pattern the mask function returns a ``CausalPattern``, a small plain object (not a
tensor subclass) that the model passes through its layers untouched; the attention function turns it into:

    no padding,  Sq == Skv  (prefill)             is_causal=True (upper-left; nothing materialized)
    no padding,  Sq <  Skv  (decode with a cache) CausalBias(LOWER_RIGHT, Sq, Skv)
    padding,     Sq == Skv                        TensorBias(key padding (B, 1, 1, Skv)), is_causal=True
    padding,     Sq == 1 <  Skv                   TensorBias(key padding (B, 1, 1, Skv)) (lower-right
                                                  causal keeps every key for a single query)
    padding,     1 < Sq < Skv                     the key padding with a lower-right causal mask, one
                                                  bias (``PaddedLowerRight``)

Anything else (sliding windows, a static cache whose keys run past the queries, packed sequences, masks
the caller built in 4-D) is built by transformers' own ``sdpa_mask`` and passed on as a ``TensorBias``.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import create_position_bias_mask
from transformers.masking_utils import AttentionMaskInterface, causal_mask_function, prepare_padding_mask, sdpa_mask

import sdpa_core

from .._kernel_bias import KernelBias
from .._masks import causal_keep
from ..bias import TensorBias
from ..variants import CausalVariant

__all__ = ["register", "CausalPattern", "PaddedLowerRight", "to_sdpa_core_mask", "attention_forward",
           "build_mask"]


class CausalPattern:
    """A causal mask transformers asked for, kept symbolic: query i (position i + q_offset) sees key j
    (position j + kv_offset) when j + kv_offset <= i + q_offset, and, with ``key_padding`` (bool (B, Skv),
    True = a real token), only real keys.

    Only built when the offsets make it upper-left (q_offset == kv_offset) or lower-right
    (q_offset - kv_offset == Skv - Sq); ``lower_right`` says which.
    """

    __slots__ = ("seq_len_q", "seq_len_kv", "lower_right", "key_padding")

    def __init__(self, seq_len_q: int, seq_len_kv: int, lower_right: bool, key_padding: torch.Tensor | None):
        self.seq_len_q = seq_len_q
        self.seq_len_kv = seq_len_kv
        self.lower_right = lower_right
        self.key_padding = key_padding

    def __repr__(self) -> str:
        pad = None if self.key_padding is None else tuple(self.key_padding.shape)
        return (f"CausalPattern(seq_len_q={self.seq_len_q}, seq_len_kv={self.seq_len_kv}, "
                f"lower_right={self.lower_right}, key_padding={pad})")

    def materialize(self, device=None) -> torch.Tensor:
        """The bool (B or 1, 1, Sq, Skv) mask transformers' ``sdpa_mask`` would have built (slow reference)."""
        variant = CausalVariant.LOWER_RIGHT if self.lower_right else CausalVariant.UPPER_LEFT
        keep = causal_keep(variant, self.seq_len_q, self.seq_len_kv, device)[None, None]
        if self.key_padding is not None:
            keep = keep & self.key_padding.to(device)[:, None, None, :]
        return keep


class PaddedLowerRight(TensorBias):
    """A key-padding mask (bool (B, 1, 1, Skv), True = attend) with a lower-right causal mask on top, as one
    bias: the case 1 < Sq < Skv with padding (chunked prefill, speculative decoding). The public
    ``TensorBias`` only combines with ``is_causal`` (upper-left); libsdpa's dense-bias kernels and the
    PyTorch route take any causal variant, so this subclass only names a different variant."""

    def __init__(self, key_padding: torch.Tensor, seq_len_q: int, seq_len_kv: int):
        super().__init__(key_padding)
        self._seq_lens = (seq_len_q, seq_len_kv)

    def __repr__(self) -> str:
        return f"PaddedLowerRight(key_padding_shape={tuple(self.bias.shape)})"

    def materialize(self, device=None) -> torch.Tensor:
        out = self.bias & causal_keep(CausalVariant.LOWER_RIGHT, *self._seq_lens, self.bias.device)
        return out if device is None else out.to(device)

    def _kernel_bias(self, causal: bool) -> KernelBias:
        if causal:
            raise sdpa_core.SdpaValueError(f"is_causal=True cannot be combined with {self!r}, which is causal")
        return KernelBias.dense_tensor(self.bias, CausalVariant.LOWER_RIGHT)


def _is_traced() -> bool:
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def build_mask(batch_size: int, q_length: int, kv_length: int, q_offset=0, kv_offset: int = 0,
               mask_function=causal_mask_function, attention_mask: torch.Tensor | None = None,
               local_size: int | None = None, allow_is_causal_skip: bool = True, **kwargs):
    """transformers' mask-interface signature (as ``masking_utils.sdpa_mask``). Returns a ``CausalPattern``
    for a plain causal mask; otherwise whatever ``sdpa_mask`` returns (a bool 4-D tensor or None)."""
    plain = mask_function is causal_mask_function and local_size is None
    # A StaticCache hands q_offset as a tensor (to avoid graph breaks): not an int we can compare cheaply.
    ints = all(isinstance(v, int) for v in (q_offset, kv_offset, q_length, kv_length))
    if plain and ints and q_offset - kv_offset in (0, kv_length - q_length):
        padding = prepare_padding_mask(attention_mask, kv_length, kv_offset)
        if padding is not None:
            padding = padding[:, kv_offset:kv_offset + kv_length]
            # Dropping an all-True padding mask lets the call run causal-only; the check syncs, so it is
            # skipped while tracing (a kept all-True mask is only slower, never wrong).
            if not _is_traced() and bool(padding.all()):
                padding = None
        lower_right = q_offset - kv_offset != 0
        return CausalPattern(q_length, kv_length, lower_right, padding)
    return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                     kv_offset=kv_offset, mask_function=mask_function, attention_mask=attention_mask,
                     local_size=local_size, allow_is_causal_skip=allow_is_causal_skip, **kwargs)


def to_sdpa_core_mask(mask, seq_len_q: int, seq_len_kv: int, is_causal: bool):
    """``(attn_mask, is_causal)`` for ``sdpa_core.scaled_dot_product_attention`` from what transformers
    passed as ``attention_mask`` (see the module docstring for the table)."""
    if isinstance(mask, CausalPattern):
        if (mask.seq_len_q, mask.seq_len_kv) != (seq_len_q, seq_len_kv):
            raise sdpa_core.SdpaValueError(f"{mask!r} was built for other lengths than query {seq_len_q} / key "
                                           f"{seq_len_kv}")
        upper_left = not mask.lower_right or seq_len_q == seq_len_kv
        if mask.key_padding is None:
            if upper_left:
                return None, seq_len_q > 1
            return sdpa_core.causal_lower_right(seq_len_q, seq_len_kv), False
        pad = mask.key_padding[:, None, None, :]  # (B, 1, 1, Skv): broadcast, never (B, 1, Sq, Skv)
        if upper_left:
            return TensorBias(pad), seq_len_q > 1
        if seq_len_q == 1:
            return TensorBias(pad), False
        return PaddedLowerRight(pad, seq_len_q, seq_len_kv), False
    if mask is None:
        return None, is_causal
    return TensorBias(mask), False


def attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask, dropout: float = 0.0, scaling: float | None = None,
                      is_causal: bool | None = None, position_bias: torch.Tensor | None = None, **kwargs):
    """transformers' attention-interface signature (as ``sdpa_attention_forward``): query (B, Hq, Sq, D),
    key/value (B, Hkv, Skv, D). Returns (output (B, Sq, Hq, D), None)."""
    seq_q, seq_kv = query.shape[2], key.shape[2]
    # As transformers' sdpa: is_causal only without a mask and with more than one query (a single query
    # with no mask sees every key).
    is_causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    is_causal = bool(seq_q > 1 and attention_mask is None and is_causal)
    if position_bias is not None:
        # A learned per-layer additive bias (T5 style): one dense float mask, as transformers builds it.
        mask = attention_mask.materialize(query.device) if isinstance(attention_mask, CausalPattern) \
            else attention_mask
        attn_mask, is_causal = TensorBias(create_position_bias_mask(position_bias, mask, is_causal, query, key)), False
    else:
        attn_mask, is_causal = to_sdpa_core_mask(attention_mask, seq_q, seq_kv, is_causal)
    out = sdpa_core.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, dropout_p=dropout,
                                                 is_causal=is_causal, scale=scaling,
                                                 enable_gqa=key.shape[1] != query.shape[1])
    return out.transpose(1, 2).contiguous(), None


def register(name: str = "sdpa_core") -> str:
    """Register sdpa_core with transformers under ``name`` (attention and mask functions); returns ``name``,
    to pass as ``attn_implementation``. Safe to call more than once."""
    AttentionInterface.register(name, attention_forward)
    AttentionMaskInterface.register(name, build_mask)
    return name
