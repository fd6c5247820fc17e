"""Where ``dispatch_policy("auto")`` hands a call that an sdpa_core kernel covers to PyTorch instead.

The product rule: no call through sdpa_core may be slower than the ``torch.nn.functional`` call it
replaces. Torch has the faster kernel for some requests; those are listed here with the measurement
behind each (benchmarks/results.md, H100, 2026-11-25/26):
  * sm90, no bias or upper-left causal: torch's default (cuDNN) runs ~1.7x our sm80-class kernel
    (d128 S8k causal 552 vs 326 TFLOP/s), so such calls go to torch where libsdpa has no Hopper forward for
    them; the Hopper forward wins the inference calls at head dims 64, 128 and 256 (_HOPPER_FORWARD_WINS)
    and keeps them;
  * sm90, a dense bias without a causal mask, prefill, where libsdpa has no Hopper kernel for the call:
    torch's default (cuDNN) 277-307 vs our sm80 kernel's 247-255. The Hopper kernel (SDPA_BUILD_SM90)
    wins the inference call: H100, 2026-11-26, d128 S4k (1,H,S,S) bias, 325 vs torch default 269;
Decode-shaped calls (Sq <= 16, inference) stay on sdpa_core's split-KV decode kernels, whatever the
mask: H200, 2026-11-26, d128 Hq=32 Hkv=8 lower-right, GB/s of K+V: B=8 Sq=1 Skv=8k 3385 vs torch's best
3274, B=1 Skv=32k 2612 vs 2315, B=8 Sq=4 3314 vs 778, B=64 Skv=2k 3823 vs 3680 (benchmarks/results.md).
Everything else (ALiBi, lower-right causal prefill, dense bias + causal) stays on sdpa_core's kernels,
which are at or ahead of torch there. Lower-right causal training does too where libsdpa has the Hopper
backward for the call (H100, 2026-11-26, d128 Sq2k/Skv8k fwd+bwd: 362 vs torch's default 295 TFLOP/s).

One exception to the dense-bias rule: a call that trains the bias itself (its tensor requires grad) stays
fused. torch's cuDNN and flash backends compute no bias gradient, so torch runs such a call on its
memory-efficient backend: H100, 2026-11-26, d128 S4k (1,H,S,S) bias with its gradient, fwd+bwd 107 TFLOP/s
against 187 for the fused Hopper backward that also writes the bias gradient (148 with the sm80 one).

Other training calls (query, key or value need grad) follow the same rules, with none of their own: forward
and backward run on one path (torch's forward does not write the log-sum-exp sdpa_core's backward reads),
and where torch's forward wins, its backward (cuDNN's) is the one ours has to beat. The Hopper backward
does not yet: H100, 2026-11-26, own fwd+bwd d128 S8k causal 381 TFLOP/s against torch's default 501 (and
1.31x torch's FlashAttention-2), so plain training calls stay on torch on sm90.
"""

from __future__ import annotations

import os

import torch

from . import _C, _kernels, policy

_HALF = (torch.float16, torch.bfloat16)

_device_info: dict[int, tuple[int, int]] = {}


def device_info(device: torch.device) -> tuple[int, int]:
    """(compute capability major, SM count), cached per device: the query costs microseconds."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    info = _device_info.get(index)
    if info is None:
        props = torch.cuda.get_device_properties(index)
        info = _device_info[index] = (props.major, props.multi_processor_count)
    return info


def torch_is_faster(query, bias, training: bool = False) -> str:
    """Why torch's kernel should run this fused-eligible call, or "" when sdpa_core's should. ``training``:
    the call needs gradients, so the backward's speed counts too."""
    if policy.current() != "auto":
        return ""
    kind, causal = int(bias.kind), int(bias.causal or 0)
    if kind == 0:
        return _unbiased_reason(query, causal, training)
    if kind == 2 and training and _trains_the_bias(bias):
        # The bias-gradient rule: torch's cuDNN kernel, the reason for the rule below, has no bias gradient;
        # torch falls back to its memory-efficient backend (~105 TFLOP/s, H200), slower than the fused
        # backward with the bias gradient (expected ~160+). So learned biases go fused, causal or not.
        return ""
    if kind == 2 and causal == 0 and device_info(query.device)[0] == 9 and not _decode_shaped(query, training):
        if training or not _hopper_forward(query):
            return "dispatch_policy 'auto': on sm90 torch's cuDNN kernel is faster for a dense bias without causal"
    return ""


# (head dim, causal) of the inference calls where libsdpa's Hopper forward beats torch's default on sm90.
# H100, bf16 fwd TFLOP/s, ours (fwd_sm90) vs torch's default. Sixth session: d128 S8k causal 552 vs 540 and
# 543 vs 533, S16k 595 vs 557. Seventh session (2026-11-26, wide tiles): d128 S8k no mask 650 vs 631, d64 S8k
# causal 457 vs 435, d256 S8k no mask 678 vs 673 and causal 611 vs 591. Tenth session: d64 S8k causal 470 vs
# 435 (H100), 458 vs 428 (H200); d64 S8k no mask 524 and 520 vs torch's default 459 and 463 (H100, two rounds).
_HOPPER_FORWARD_WINS = frozenset({(128, 0), (128, 1), (64, 0), (64, 1), (256, 0), (256, 1)})


def _hopper_forward(query) -> bool:
    """libsdpa has a Hopper (sm90) forward kernel for this dtype and head dim, and may run it."""
    return _hopper_kernel(query, "fwd_sm90")


def _hopper_kernel(query, family: str) -> bool:
    """libsdpa has a kernel of the Hopper ``family`` (fwd_sm90, bwd_sm90) for this dtype and head dim, and may
    run it (SDPA_MAX_ARCH, read by libsdpa, can cap dispatch below sm90)."""
    key = (family, query.dtype, query.shape[-1])
    found = _hopper_kernels.get(key)
    if found is None:
        cap = os.environ.get("SDPA_MAX_ARCH", "")
        dtype = str(query.dtype).removeprefix("torch.")
        found = _hopper_kernels[key] = (not cap.isdigit() or int(cap) >= 90) and any(
            name.startswith(family + "<") and name.endswith(f", {dtype}, hd{query.shape[-1]}>")
            for name in _C.compiled_kernels())
    return found


_hopper_kernels: dict[tuple, bool] = {}


def _decode_shaped(query, training: bool) -> bool:
    """An inference call with few enough query rows for libsdpa's split-KV decode kernels, which beat torch's
    (the measurements in the module docstring); training calls follow the prefill rules."""
    return query.shape[2] <= _kernels.SPLIT_KV_MAX_SEQLEN_Q and not training


def _trains_the_bias(bias) -> bool:
    """The dense bias's tensor will get a gradient (``_dispatch.dense_needs_grad``, which this module cannot
    import: the dispatcher imports it)."""
    return bias.dense.requires_grad and torch.is_grad_enabled()


def _unbiased_reason(query, causal: int, training: bool = False) -> str:
    """The rule for calls without an additive bias (``causal``: 0 none, 1 upper-left, 2 lower-right;
    ``training``: the backward's speed counts too), shared by the dispatcher and the no-mask hot path."""
    major, _ = device_info(query.device)
    if causal in (0, 1) and major == 9 and not _decode_shaped(query, training):
        if not training and (query.shape[-1], causal) in _HOPPER_FORWARD_WINS and _hopper_forward(query):
            return ""
        return "dispatch_policy 'auto': on sm90 torch's own fused kernel (cuDNN) is faster for this request"
    if training and causal == 2 and major == 9 and not _hopper_kernel(query, "bwd_sm90"):
        # fwd+bwd, H200, 2026-11-26, d128 Sq2k/Skv8k: torch's FlashAttention-2 302 TFLOP/s, ours 236 (the sm80
        # backward; the forwards tie). The Hopper backward wins it: H100, 2026-11-26, 362 vs torch's default 295.
        return ("dispatch_policy 'auto': on sm90 torch's fused forward and backward are faster for "
                "lower-right causal training")
    return ""


def torch_takes_unmasked(query, key, value, is_causal, dropout_p, scale) -> bool:
    """The no-mask hot path: True when a call with ``attn_mask=None`` goes to torch's SDPA exactly as the
    caller wrote it, so sdpa_core adds one test to torch's own cost instead of its whole dispatch. It asks
    the rule the checked path (and explain()) asks, with the call's own ``is_causal``, so that the two never
    disagree where the rule tells causal calls from unmasked ones.

    That holds off CUDA, for dtypes or requests sdpa_core's kernels do not take (float32, dropout), and
    where torch's kernel is the faster one under "auto" (sm90 prefill), training calls as
    the others; never for misaligned CUDA inputs (they are copied first: torch's kernels have gotten some
    of them wrong) or a non-finite or negative ``scale``.
    Anything unusual (not tensors, odd ranks, bad arguments) answers False and takes the checked path.
    """
    try:
        if scale is not None and not (type(scale) is float and -_INF < scale < _INF):
            return False
        if not query.is_cuda:  # CPU: torch's own checks let some bad shapes through; take the checked path
            return False
        if scale is not None and scale < 0:  # torch's cuDNN path gets it wrong: _fallback._Sdpa avoids it
            return False
        if query.numel() == 0 or key.numel() == 0:  # torch 2.11 returns None for an empty CUDA batch
            return False
        if query.dim() != 4 or torch.compiler.is_compiling():
            return False
        if type(is_causal) is not bool:
            return False
        if query.dtype in _HALF and not dropout_p:  # sdpa_core's kernels may take it, training or not
            if policy.current() != "auto" or not _unbiased_reason(query, int(is_causal)):
                return False
        return _kernels.is_aligned(query) and _kernels.is_aligned(key) and _kernels.is_aligned(value)
    except (AttributeError, TypeError):
        return False


_INF = float("inf")
