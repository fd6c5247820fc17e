"""``explain()``: which path ``scaled_dot_product_attention`` would take for these arguments, and why."""

from __future__ import annotations

import warnings

import torch

from . import _dispatch, _kernels, _nd, _validate, policy
from ._kernel_bias import KernelBias
from .bias import TensorBias, _BuiltinBias
from .functional import resolve_mask
from .variants import CausalVariant


def explain(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask=None, dropout_p: float = 0.0,
            is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False) -> str:
    """Which path ``scaled_dot_product_attention`` takes for these arguments, and why. Runs nothing.

    Args:
        query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa: exactly as for
            ``scaled_dot_product_attention``.

    Returns:
        A few lines: ``bias: ...`` (the bias as sdpa_core sees it), ``note: ...`` lines (deprecations,
        materialization, copies), and ``path: ...``: the fused kernel and its configuration, or the
        PyTorch request and every reason a fused kernel does not run it. Inputs or a float mask that
        require grad get a ``backward: ...`` line as well: the fused backward kernel ("with the bias
        gradient" where it also writes the mask's), or PyTorch's autograd through the request (a training
        call runs both passes on one path).

    Raises:
        The same errors as ``scaled_dot_product_attention`` for the same arguments.
    """
    _validate.check_scalars(dropout_p, is_causal, scale, enable_gqa)
    notes = []
    if isinstance(attn_mask, torch.Tensor) and not isinstance(attn_mask, torch.nn.attention.bias.CausalBias):
        notes.append("attn_mask is a Tensor: deprecated, wrap it in TensorBias")
    elif attn_mask is not None and getattr(attn_mask, "needs_materialization", lambda: False)():
        notes.append(f"{type(attn_mask).__name__} needs materialization: it is built as a dense tensor first")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        attn_bias = resolve_mask(attn_mask, is_causal, query.device if isinstance(query, torch.Tensor) else None)
    if not _validate.tensors_look_valid(query, key, value) or not _nd.is_canonical(query, key, value):
        _validate.check_tensor_types(query, key, value)
        return _render("as given", notes, "torch:torch SDPA on the inputs as given",
                       ["query/key/value shapes are not (N, ..., H, S, D) with one set of batch dimensions"],
                       _torch_backward(query, key, value, attn_bias))
    adapted = _nd.to_4d(query, key, value, attn_bias)
    if adapted is None:
        return _render(repr(attn_bias), notes, "torch:torch SDPA on the inputs as given",
                       ["attn_mask has more dimensions than the query"], _torch_backward(query, key, value, attn_bias))
    q, k, v, attn_bias, _ = adapted
    _validate.check_inputs(q, k, v, enable_gqa)
    if attn_bias is None:
        described = "no bias" + (" (is_causal: CausalUpperLeft)" if is_causal else "")
        bias = KernelBias.causal_only(CausalVariant.UPPER_LEFT if is_causal else None)
    elif not isinstance(attn_bias, _BuiltinBias):
        return f"bias: {attn_bias!r}\npath: its own {type(attn_bias).__name__}.dispatch (user-defined)"
    else:
        attn_bias._check_inputs(q, k)
        described, bias = repr(attn_bias), attn_bias._kernel_bias(is_causal)
    if q.dim() != query.dim():
        notes.append(f"{query.dim()}-D inputs run as 4-D {tuple(q.shape)}")
    plan = _dispatch.plan(q, k, v, bias, scale, dropout_p)
    reasons = list(plan.reasons)
    if plan.path.startswith(("fused:decode_sm80", "fused:fwd_sm90")):  # the families that say more than a name
        details = _kernels.describe(q, k, v, bias, _dispatch.default_scale(q, scale))
        reasons += [details] if details else []
    return _render(described, notes, plan.path, reasons, plan.backward)


def _torch_backward(query, key, value, attn_bias) -> str:
    learned = isinstance(attn_bias, TensorBias) and attn_bias.bias.requires_grad and torch.is_grad_enabled()
    return "torch" if learned or _dispatch.needs_grad(query, key, value) else ""


def _render(described: str, notes: list[str], path: str, reasons: list[str], backward: str = "") -> str:
    lines = [f"bias: {described}"] + [f"note: {n}" for n in notes]
    where, what = path.split(":", 1)
    if where == "fused":
        lines.append(f"path: fused kernel {what} (dispatch_policy {policy.current()!r})")
        lines += [f"note: {r}" for r in reasons]
    else:
        lines.append(f"path: PyTorch fallback: {what}, because:")
        lines += [f"  - {r}" for r in reasons]
    if backward.startswith("fused:"):
        lines.append(f"backward: fused kernel {backward[len('fused:'):]}")
    elif backward:
        lines.append("backward: PyTorch autograd through the request above (torch's SDPA backward)")
    return "\n".join(lines)
