"""Attention biases as objects (PyTorch RFC #110681).

``AttnBias`` is the abstract base: a bias can always ``materialize()`` itself as a dense tensor (the slow
reference), says whether it ``needs_materialization()``, and has a static ``dispatch()`` that computes
attention with it. The built-in biases never materialize on the fast path: they describe themselves to
libsdpa's fused kernels, and fall back to PyTorch (materialized) only where no kernel covers the inputs.
"""

from __future__ import annotations

import abc
import math

import torch

from . import _dispatch, _masks
from ._kernel_bias import KernelBias
from .errors import SdpaTypeError, SdpaValueError
from .variants import CausalVariant, as_causal_variant

__all__ = [
    "AttnBias",
    "TensorBias",
    "CausalBias",
    "CausalVariant",
    "AlibiBias",
    "causal_upper_left",
    "causal_lower_right",
    "alibi_slopes",
]


class AttnBias(abc.ABC):
    """Base of every bias. Subclass it and implement ``materialize``; that alone works everywhere.

    Override ``needs_materialization`` (return False) and ``dispatch`` to compute without a dense tensor.
    """

    @abc.abstractmethod
    def materialize(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The bias as a tensor broadcastable to (B, H, Sq, Skv): a bool mask (True = attend) or an
        additive float bias. This is the slow reference; it allocates Sq x Skv elements."""

    def needs_materialization(self) -> bool:
        """True when ``scaled_dot_product_attention`` must call ``materialize`` before computing."""
        return True

    @staticmethod
    def dispatch(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_bias: "AttnBias",
                 causal: bool, scale: float | None, dropout_p: float) -> torch.Tensor:
        """Compute attention with ``attn_bias``; ``scaled_dot_product_attention`` calls this.

        This base version materializes the bias and runs it as a ``TensorBias``. Override it (and
        ``needs_materialization``) to compute without a dense tensor.

        Args:
            query, key, value: (B, H, S, D) tensors, already validated (key/value may have fewer heads).
            attn_bias: the bias object (``dispatch`` is static, as in the RFC).
            causal: ``is_causal`` of the call: add an upper-left causal mask.
            scale: the factor on ``query @ key^T``, or None for ``1 / sqrt(D)``.
            dropout_p: dropout probability.

        Returns:
            The attention output, (B, Hq, Sq, Dv).
        """
        dense = TensorBias(attn_bias.materialize(query.device))
        return TensorBias.dispatch(query, key, value, dense, causal, scale, dropout_p)


class _BuiltinBias(AttnBias):
    """A bias libsdpa has fused kernels for: it validates itself against the inputs and describes itself
    as a ``KernelBias``; dispatch is shared."""

    def needs_materialization(self) -> bool:
        return False

    @abc.abstractmethod
    def _check_inputs(self, query: torch.Tensor, key: torch.Tensor) -> None:
        """Raise ValueError naming the argument if this bias does not fit the inputs."""

    @abc.abstractmethod
    def _kernel_bias(self, causal: bool) -> KernelBias:
        """This bias, plus an upper-left causal mask when ``causal``, as libsdpa sees it."""

    @staticmethod
    def dispatch(query, key, value, attn_bias, causal, scale, dropout_p):
        """Compute attention with this bias without materializing it: a fused sdpa_core kernel where one
        covers the inputs, else PyTorch with the cheapest equivalent request (``explain()`` says which).

        Args and Returns as ``AttnBias.dispatch``.

        Raises:
            SdpaValueError: the bias does not fit the inputs (sequence lengths, heads, device), or
                ``causal`` is set for a bias that is already causal.
        """
        attn_bias._check_inputs(query, key)
        return _dispatch.attention(query, key, value, attn_bias._kernel_bias(causal), scale, dropout_p,
                                   query.shape[1] != key.shape[1])


def _check_seq_lens(bias_name: str, seq_len_q: int, seq_len_kv: int, query: torch.Tensor,
                    key: torch.Tensor) -> None:
    if seq_len_q != query.shape[-2]:
        raise SdpaValueError(f"{bias_name}: seq_len_q={seq_len_q} does not match query's sequence length "
                             f"{query.shape[-2]} (query shape {tuple(query.shape)})")
    if seq_len_kv != key.shape[-2]:
        raise SdpaValueError(f"{bias_name}: seq_len_kv={seq_len_kv} does not match key's sequence length "
                             f"{key.shape[-2]} (key shape {tuple(key.shape)})")


def _check_length(name: str, value) -> int:
    """``value`` if it is an int >= 0 (an empty sequence is valid, as in torch). A SymInt (a size traced by
    torch.export / torch.compile) is checked with torch._check, which records the fact instead of
    branching on it."""
    if isinstance(value, torch.SymInt):
        torch._check(value >= 0, lambda: f"{name} must be a non-negative int; got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SdpaValueError(f"{name} must be a non-negative int; got {value!r}")
    return value


def _check_positive_int(name: str, value) -> int:
    """``value`` if it is an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SdpaValueError(f"{name} must be a positive int; got {value!r}")
    return value


def _check_device(name: str, tensor: torch.Tensor, query: torch.Tensor) -> None:
    if tensor.device != query.device:
        raise SdpaValueError(f"{name} is on {tensor.device} but query is on {query.device}; "
                             f"create it on the query's device")


def _forbid_is_causal(bias: AttnBias) -> None:
    raise SdpaValueError(f"is_causal=True cannot be combined with {bias!r}, which already carries a causal "
                         f"mask; pick the variant on the bias and leave is_causal=False")


class TensorBias(_BuiltinBias):
    """A bias you already hold as a tensor: an additive float bias, or a bool mask (True = attend, as in
    PyTorch), broadcastable to (B, H, Sq, Skv). With ``is_causal=True`` an upper-left causal mask is
    applied on top of it. Additive values below -2.35e38 (``finfo(bfloat16 / float32).min``) mask like
    -inf.

    A float bias of the query's dtype or a bool mask runs fused on CUDA (read in place, broadcast
    dimensions through zero strides); a float bias of another dtype is converted to the query's dtype
    and computed by PyTorch. A float bias that requires grad (a learned relative-position bias, T5 or
    Swin style) gets its gradient from the fused backward in eager mode: written for every (batch, query
    head, query, key), then summed over the dimensions the bias broadcasts along, which costs one
    (B, H, Sq, Skv) buffer of the query's dtype during the backward. Under ``torch.compile`` PyTorch
    computes such calls.

    Args:
        bias: a bool or floating tensor broadcastable to (B, H, Sq, Skv) (for N-D inputs, to
            (N, ..., H, Sq, Skv)).

    Raises:
        SdpaTypeError: ``bias`` is not a bool or floating tensor.
    """

    def __init__(self, bias: torch.Tensor):
        if not isinstance(bias, torch.Tensor):
            raise SdpaTypeError(f"TensorBias: bias must be a torch.Tensor; got {type(bias).__name__}")
        if bias.dtype != torch.bool and not bias.is_floating_point():
            raise SdpaTypeError(f"TensorBias: bias must be bool or floating point; got dtype {bias.dtype}")
        self.bias = bias

    def __repr__(self) -> str:
        return f"TensorBias(shape={tuple(self.bias.shape)}, dtype={self.bias.dtype}, device={self.bias.device})"

    def materialize(self, device=None) -> torch.Tensor:
        return self.bias if device is None else self.bias.to(device)

    def _check_inputs(self, query, key) -> None:
        target = (query.shape[0], query.shape[1], query.shape[2], key.shape[2])
        shape = tuple(self.bias.shape)
        if len(shape) > 4:
            raise SdpaValueError(f"attn_mask of shape {shape} has more dimensions than the inputs; it must broadcast "
                                 f"to (batch, heads, seq_len_q, seq_len_kv) = {target}")
        padded = (1,) * (4 - len(shape)) + shape
        if any(s != 1 and s != t for s, t in zip(padded, target)):
            raise SdpaValueError(f"attn_mask of shape {shape} does not broadcast to (batch, heads, seq_len_q, "
                                 f"seq_len_kv) = {target}")
        _check_device("attn_mask", self.bias, query)
        dtype = self.bias.dtype
        if dtype not in (torch.bool, torch.float32, query.dtype):
            raise SdpaTypeError(f"attn_mask dtype must be bool, float32 or the query dtype ({query.dtype}), as in "
                                f"PyTorch; got {dtype}")

    def _kernel_bias(self, causal: bool) -> KernelBias:
        return KernelBias.dense_tensor(self.bias, CausalVariant.UPPER_LEFT if causal else None)


class CausalBias(_BuiltinBias):
    r"""A causal mask, aligned upper-left or lower-right. Drawn for Sq = 3, Skv = 4 (1 = attend)::

        CausalVariant.UPPER_LEFT     CausalVariant.LOWER_RIGHT
        1 0 0 0                      1 1 0 0
        1 1 0 0                      1 1 1 0
        1 1 1 0                      1 1 1 1

    Both run as fused kernels that skip the masked tiles; ``materialize`` returns the bool (Sq, Skv) mask.
    ``is_causal=True`` together with a CausalBias is an error (the variant would be ambiguous). torch's
    ``torch.nn.attention.bias.CausalBias`` objects are accepted as ``attn_mask`` and mean the same.

    Args:
        variant: ``CausalVariant.UPPER_LEFT`` or ``LOWER_RIGHT`` (torch's ``CausalVariant`` works too).
        seq_len_q: query length Sq, >= 0; must equal the query's.
        seq_len_kv: key length Skv, >= 0; must equal the key's.

    Raises:
        SdpaTypeError: ``variant`` is not a causal variant.
        SdpaValueError: a length is not a non-negative int.
    """

    def __init__(self, variant: CausalVariant, seq_len_q: int, seq_len_kv: int):
        self.variant = as_causal_variant(variant)
        self.seq_len_q = _check_length("CausalBias: seq_len_q", seq_len_q)
        self.seq_len_kv = _check_length("CausalBias: seq_len_kv", seq_len_kv)

    def __repr__(self) -> str:
        return f"CausalBias(variant={self.variant.name}, seq_len_q={self.seq_len_q}, seq_len_kv={self.seq_len_kv})"

    def materialize(self, device=None) -> torch.Tensor:
        return _masks.causal_keep(self.variant, self.seq_len_q, self.seq_len_kv, device)

    def _check_inputs(self, query, key) -> None:
        _check_seq_lens("CausalBias", self.seq_len_q, self.seq_len_kv, query, key)

    def _kernel_bias(self, causal: bool) -> KernelBias:
        if causal:
            _forbid_is_causal(self)
        return KernelBias.causal_only(self.variant)


def causal_upper_left(seq_len_q: int, seq_len_kv: int) -> CausalBias:
    """Causal mask keeping key j for query i when j <= i (PyTorch's ``is_causal``).

    Returns:
        ``CausalBias(CausalVariant.UPPER_LEFT, seq_len_q, seq_len_kv)``."""
    return CausalBias(CausalVariant.UPPER_LEFT, seq_len_q, seq_len_kv)


def causal_lower_right(seq_len_q: int, seq_len_kv: int) -> CausalBias:
    """Causal mask keeping key j for query i when j <= i + (Skv - Sq) (decoding with a KV cache).

    Returns:
        ``CausalBias(CausalVariant.LOWER_RIGHT, seq_len_q, seq_len_kv)``."""
    return CausalBias(CausalVariant.LOWER_RIGHT, seq_len_q, seq_len_kv)


class AlibiBias(_BuiltinBias):
    r"""ALiBi: adds ``-slopes[h] * |i + (Skv - Sq) - j|`` to the scaled scores (after ``scale``, as an
    additive attn_mask is in PyTorch). Drawn for Sq = 2, Skv = 4, one head of slope s::

        -2s  -1s   0   -1s
        -3s  -2s  -1s   0

    ``slopes`` is float32 of shape (H,) or (B, H), on the query's device; ``alibi_slopes(H)`` gives the
    paper's. ``causal`` (None or a CausalVariant) also masks; with ``causal=None``, ``is_causal=True`` adds
    an upper-left mask. Runs fused: the kernel reads one slope per head, never an Sq x Skv tensor.
    Where PyTorch computes it (CPU, slopes that require grad, ...) the bias is materialized in the query's
    dtype from float32 (float64 for float64 inputs) values; slopes that require grad get their gradient.

    Args:
        slopes: float32 (H,) or (B, H) on the query's device; ``alibi_slopes(H)`` gives the paper's.
        seq_len_q: query length Sq, >= 0.
        seq_len_kv: key length Skv, >= 0.
        causal: None, or the ``CausalVariant`` (ours or torch's) of a causal mask to apply as well.

    Raises:
        SdpaTypeError: ``slopes`` is not a float32 tensor, or ``causal`` not a causal variant.
        SdpaValueError: ``slopes`` is not 1-D or 2-D, or a length is not a non-negative int.
    """

    def __init__(self, slopes: torch.Tensor, seq_len_q: int, seq_len_kv: int, causal: CausalVariant | None = None):
        if not isinstance(slopes, torch.Tensor):
            raise SdpaTypeError(f"AlibiBias: slopes must be a torch.Tensor; got {type(slopes).__name__}")
        if slopes.dtype != torch.float32:
            raise SdpaTypeError(f"AlibiBias: slopes must be float32; got {slopes.dtype}")
        if slopes.dim() not in (1, 2):
            raise SdpaValueError(f"AlibiBias: slopes must have shape (H,) or (B, H); got {tuple(slopes.shape)}")
        causal = None if causal is None else as_causal_variant(causal)
        self.slopes = slopes
        self.seq_len_q = _check_length("AlibiBias: seq_len_q", seq_len_q)
        self.seq_len_kv = _check_length("AlibiBias: seq_len_kv", seq_len_kv)
        self.causal = causal

    def __repr__(self) -> str:
        causal = None if self.causal is None else self.causal.name
        return (f"AlibiBias(slopes_shape={tuple(self.slopes.shape)}, seq_len_q={self.seq_len_q}, "
                f"seq_len_kv={self.seq_len_kv}, causal={causal})")

    def materialize(self, device=None) -> torch.Tensor:
        additive = _masks.alibi_additive(self.slopes, self.seq_len_q, self.seq_len_kv, device)
        if self.causal is None:
            return additive
        return _masks.add_causal(additive, self.causal, self.seq_len_q, self.seq_len_kv, additive.device)

    def _check_inputs(self, query, key) -> None:
        _check_seq_lens("AlibiBias", self.seq_len_q, self.seq_len_kv, query, key)
        batch, heads = query.shape[0], query.shape[1]
        if tuple(self.slopes.shape) not in ((heads,), (batch, heads)):
            raise SdpaValueError(f"AlibiBias: slopes must have shape ({heads},) or ({batch}, {heads}) for a query of "
                                 f"batch {batch} and {heads} heads; got {tuple(self.slopes.shape)}")
        _check_device("AlibiBias: slopes", self.slopes, query)

    def _kernel_bias(self, causal: bool) -> KernelBias:
        if causal and self.causal is not None:
            _forbid_is_causal(self)
        return KernelBias.alibi(self.slopes, CausalVariant.UPPER_LEFT if causal else self.causal)


def alibi_slopes(num_heads: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The ALiBi paper's slopes for ``num_heads`` heads, float32 of shape (num_heads,).

    For a power of two n they are 2^(-8/n), 2^(-16/n), ...; otherwise the slopes of the nearest lower
    power of two p, followed by every other slope of 2p (Press et al., 2022).

    Args:
        num_heads: number of heads, >= 1.
        device: where to create the tensor.

    Returns:
        float32 tensor of shape (num_heads,).

    Raises:
        SdpaValueError: ``num_heads`` is not a positive int.
    """
    _check_positive_int("num_heads", num_heads)

    def geometric(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (k + 1) for k in range(n)]

    power = 2 ** int(math.floor(math.log2(num_heads)))
    slopes = geometric(power)
    if power < num_heads:
        slopes += geometric(2 * power)[0::2][: num_heads - power]
    return torch.tensor(slopes, dtype=torch.float32, device=device)
