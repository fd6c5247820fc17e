"""The columns: how each contender is called for a case, and which path sdpa_core chose.

- "sdpa_core": the public API under the default dispatch policy "auto";
- "sdpa_core own": the same call inside ``sdpa_core.dispatch_policy("own")`` (only sdpa_core's own kernels);
  "-" when this sdpa_core has no ``dispatch_policy``;
- "torch default": ``F.scaled_dot_product_attention`` with no backend forced;
- "torch flash", "torch cuDNN", "torch efficient": the same inside ``sdpa_kernel(<one backend>)``, so a
  column is one kernel, never a silent fallback;
- "FlexAttention": ``torch.compile(flex_attention)``, compiled once per case (fwd and fwd+bwd share it).

A bias torch SDPA cannot express is passed to the torch columns as a materialized attn_mask in the query
dtype and marked "materialized". Masks and block masks are built once per case, outside timing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
from typing import Callable

import torch
import torch.nn.functional as F

import sdpa_core

from .cases import (CAUSAL_MASKS, DENSE_MASKS, Case, Inputs, materialized_alibi, materialized_dense_causal,
                    materialized_keep_mask)

SDPA_CORE = "sdpa_core"
SDPA_OWN = "sdpa_core own"
TORCH_DEFAULT = "torch default"
FLASH = "torch flash"
CUDNN = "torch cuDNN"
EFFICIENT = "torch efficient"
FLEX = "FlexAttention"
COLUMNS = [SDPA_CORE, SDPA_OWN, TORCH_DEFAULT, FLASH, CUDNN, EFFICIENT, FLEX]
SDPA_COLUMNS = {SDPA_CORE: "auto", SDPA_OWN: "own"}  # column -> dispatch policy


class Unsupported(Exception):
    """A contender that cannot run a case, for a reason this benchmark knows before calling it."""


@dataclasses.dataclass
class Runner:
    fn: Callable[[], torch.Tensor]  # one forward call on the case's inputs
    note: str = ""  # shown next to the number, e.g. "materialized"
    ctx: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext  # entered around timing
    # A warning containing this text means the call is not what the column claims (e.g. unfused Flex).
    forbidden_warning: str = ""


@dataclasses.dataclass(frozen=True)
class Contender:
    name: str
    build: Callable[[Case, Inputs], Runner]
    cpu: bool  # can run on CPU tensors: called by --dry-run


def one_line(e: BaseException, bare: bool = False) -> str:
    """The first non-empty line of an exception, with its type unless bare; at most 160 characters."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[0] if lines else ""
    text = text if bare else f"{type(e).__name__}: {text}"
    return text if len(text) <= 160 else text[:157] + "..."


def grad_mode(mode: str) -> contextlib.AbstractContextManager:
    """Forward timings run under no_grad; fwd+bwd under grad mode."""
    return torch.no_grad() if mode == "fwd" else torch.enable_grad()


# --------------------------------------------------------------------------- sdpa_core


def has_policy() -> bool:
    return hasattr(sdpa_core, "dispatch_policy")


def policy(name: str) -> contextlib.AbstractContextManager:
    """sdpa_core.dispatch_policy(name) as a context manager; "auto" is also the default without it."""
    if has_policy():
        return sdpa_core.dispatch_policy(name)
    if name == "auto":
        return contextlib.nullcontext()
    raise Unsupported(f"this sdpa_core has no dispatch_policy(): no '{name}' policy to select")


def sdpa_core_args(case: Case, t: Inputs):
    """The (attn_mask, is_causal) a user would pass to sdpa_core for this case."""
    if case.mask == "none":
        return None, False
    if case.mask == "causal":
        if case.sq == case.skv:
            return None, True  # the spelling torch users already write
        return sdpa_core.causal_upper_left(case.sq, case.skv), False
    if case.mask == "lower_right":
        return sdpa_core.causal_lower_right(case.sq, case.skv), False
    if case.mask == "alibi_causal":
        return sdpa_core.AlibiBias(t.slopes, case.sq, case.skv,
                                   causal=sdpa_core.CausalVariant.UPPER_LEFT), False
    if case.mask == "dense":
        return sdpa_core.TensorBias(t.bias), False
    if case.mask == "dense_causal":
        return sdpa_core.TensorBias(t.bias), True
    raise ValueError(case.mask)


def build_sdpa_core(policy_name: str) -> Callable[[Case, Inputs], Runner]:
    def build(case: Case, t: Inputs) -> Runner:
        if policy_name != "auto" and not has_policy():
            policy(policy_name)  # raises Unsupported with the reason
        mask, causal = sdpa_core_args(case, t)
        return Runner(lambda: sdpa_core.scaled_dot_product_attention(
            t.q, t.k, t.v, attn_mask=mask, is_causal=causal), ctx=lambda: policy(policy_name))

    return build


def explain(case: Case, t: Inputs, mode: str, policy_name: str) -> str:
    """sdpa_core.explain under the row's grad mode and policy, or why it could not be asked."""
    try:
        with policy(policy_name), grad_mode(mode):
            mask, causal = sdpa_core_args(case, t)
            return str(sdpa_core.explain(t.q, t.k, t.v, attn_mask=mask, is_causal=causal)).strip()
    except Exception as e:  # noqa: BLE001 - explain is informational, never fatal
        return f"path: explain unavailable ({one_line(e)})"


def condensed_path(explained: str) -> str:
    """explain()'s "path:" line, condensed: the fused kernel's name, "torch (auto): ..." where the auto
    policy routed the call to a faster torch kernel, "fallback: ..." otherwise; "; bwd: ..." when the
    inputs require grad."""
    lines = explained.splitlines()
    line = next((ln for ln in lines if ln.startswith("path:")), lines[0] if lines else "?")
    text = line.removeprefix("path:").strip().removesuffix(":").removesuffix(", because").strip()
    if text.startswith("fused kernel "):
        text = text.removeprefix("fused kernel ").split(" (dispatch_policy", 1)[0]
    elif text.startswith("PyTorch fallback"):
        what = text.removeprefix("PyTorch fallback").lstrip(": ")
        routed = any("dispatch_policy 'auto'" in ln for ln in lines)
        text = ("torch (auto): " if routed else "fallback: ") + what
    backward = next((ln for ln in lines if ln.startswith("backward:")), "")
    if backward:
        text += "; bwd: " + backward.removeprefix("backward:").strip().split(" (", 1)[0]
    return text


# --------------------------------------------------------------------------- torch SDPA

# Lower-right causal runs natively through torch's CausalBias, whose dispatch tries flash, then
# mem-efficient, honouring sdpa_kernel's flags; cuDNN has no path there, so it gets a materialized mask.
_NATIVE_LOWER_RIGHT = {TORCH_DEFAULT, FLASH, EFFICIENT}


def torch_args(column: str, case: Case, t: Inputs):
    """(attn_mask, is_causal, note) for torch SDPA; masks it cannot express are materialized."""
    if case.mask == "none":
        return None, False, ""
    if case.mask == "causal" and case.sq == case.skv:
        return None, True, ""
    if case.mask == "lower_right" and column in _NATIVE_LOWER_RIGHT:
        from torch.nn.attention.bias import causal_lower_right

        return causal_lower_right(case.sq, case.skv), False, ""
    if case.mask in ("causal", "lower_right"):
        return materialized_keep_mask(case, t), False, "materialized"
    if case.mask == "alibi_causal":
        return materialized_alibi(case, t), False, "materialized"
    if case.mask == "dense":
        return t.bias, False, ""  # already a tensor: nothing to materialize
    if case.mask == "dense_causal":
        return materialized_dense_causal(case, t), False, "materialized"
    raise ValueError(case.mask)


def build_torch(column: str, backend) -> Callable[[Case, Inputs], Runner]:
    def build(case: Case, t: Inputs) -> Runner:
        from torch.nn.attention import sdpa_kernel

        mask, causal, note = torch_args(column, case, t)
        fn = lambda: F.scaled_dot_product_attention(t.q, t.k, t.v, attn_mask=mask, is_causal=causal)
        ctx = contextlib.nullcontext if backend is None else (lambda: sdpa_kernel(backend))
        return Runner(fn, note, ctx=ctx)

    return build


# --------------------------------------------------------------------------- FlexAttention


def build_flex(compiled: bool) -> Callable[[Case, Inputs], Runner]:
    """compiled=False (--dry-run only) calls flex_attention eagerly: the wiring, not the kernel."""

    def build(case: Case, t: Inputs) -> Runner:
        if "flex" not in t.cache:
            t.cache["flex"] = _flex_parts(case, t, compiled)
        _rearm_eager_warning()
        fn, block_mask = t.cache["flex"]
        score_mod = _score_mod(case, t)  # captures this mode's view of the bias (with or without grad)
        return Runner(lambda: fn(t.q, t.k, t.v, score_mod=score_mod, block_mask=block_mask),
                      note="" if compiled else "eager",
                      forbidden_warning="without torch.compile" if compiled else "")

    return build


def _rearm_eager_warning() -> None:
    """torch warns once per process that flex_attention ran unfused; forget that it did, so an eager
    fallback in any later row is seen too (private state: skipped where this torch lacks it)."""
    shown = getattr(importlib.import_module("torch.nn.attention.flex_attention"), "_WARNINGS_SHOWN", None)
    if isinstance(shown, set):
        shown.discard("flex_attention_performance")


def _flex_parts(case: Case, t: Inputs, compiled: bool):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    fn = flex_attention
    if compiled:
        # Compiled code is cached per code object across torch.compile wrappers, so a dozen cases would
        # hit dynamo's recompile limit and fall back to eager flex (which materializes the scores; the
        # forbidden warning catches that). A reset per case gives each case its own compile, which the
        # case's fwd and fwd+bwd rows share (grad mode is a guard: one recompile per mode).
        torch._dynamo.reset()
        fn = torch.compile(flex_attention, dynamic=False)
    offset = case.causal_offset
    block_mask = None
    if case.mask in CAUSAL_MASKS:
        block_mask = create_block_mask(lambda b, h, qi, ki: qi + offset >= ki, None, None,
                                       case.sq, case.skv, device=t.q.device)
    return fn, block_mask


def _score_mod(case: Case, t: Inputs):
    if case.mask == "alibi_causal":
        slopes, shift = t.slopes, case.skv - case.sq
        return lambda s, b, h, qi, ki: s - slopes[h] * (qi + shift - ki).abs()
    if case.mask in DENSE_MASKS:
        bias = t.bias
        return lambda s, b, h, qi, ki: s + bias[0, h, qi, ki]
    return None


# --------------------------------------------------------------------------- the set


def contenders(compile_flex: bool = True) -> list[Contender]:
    from torch.nn.attention import SDPBackend

    return [
        Contender(SDPA_CORE, build_sdpa_core("auto"), cpu=True),
        Contender(SDPA_OWN, build_sdpa_core("own"), cpu=True),
        Contender(TORCH_DEFAULT, build_torch(TORCH_DEFAULT, None), cpu=True),
        Contender(FLASH, build_torch(FLASH, SDPBackend.FLASH_ATTENTION), cpu=True),
        Contender(CUDNN, build_torch(CUDNN, SDPBackend.CUDNN_ATTENTION), cpu=False),
        Contender(EFFICIENT, build_torch(EFFICIENT, SDPBackend.EFFICIENT_ATTENTION), cpu=False),
        Contender(FLEX, build_flex(compile_flex), cpu=True),
    ]
