"""The ``torch.compile`` side of dispatch: which custom op (``_ops.py``) a traced call that a fused kernel
may cover becomes. Imported only while dynamo traces, so eager users never import dynamo or the ops.

A traced call has fake tensors (no data pointers) and perhaps symbolic sizes, so libsdpa cannot be asked
about the call itself. A call that needs no gradient goes to ``attention_fwd``, whose body falls back to
PyTorch at run time. A training call goes to the ``attention_fwd_lse`` / ``attention_bwd`` pair only when
``covers_training`` says libsdpa has both kernels; otherwise the caller traces PyTorch's SDPA and its
backward, the fastest path there is without them.
"""

from __future__ import annotations

import re

import torch

from . import _C, _kernels, _ops


def attention(query, key, value, bias, scale: float, enable_gqa: bool, training: bool) -> torch.Tensor | None:
    """The custom op's output for a fused-eligible traced call, or None: trace the PyTorch route."""
    kind, causal = int(bias.kind), int(bias.causal or 0)
    if not training:
        return _ops.attention_fwd(query, key, value, kind, causal, bias.slopes, bias.dense, scale, enable_gqa)
    if covers_training(query, key, bias, torch.are_deterministic_algorithms_enabled()):
        return _ops.attention_fwd_lse(query, key, value, kind, causal, bias.slopes, bias.dense, scale)[0]
    return None


def covers_training(query, key, bias, deterministic: bool) -> bool:
    """Whether libsdpa has a forward and a backward kernel for calls like this one.

    Coverage depends on the device, dtype, head dim and bias alone (every other refusal is an alignment
    that ``_kernels.aligned`` repairs), so libsdpa is asked about stand-in tensors with the same ones. The
    head dim is matched against the compiled ones: a symbolic head dim then becomes a guard, where passing
    it on would be an argument dynamo cannot hold constant. The ops still check at run time."""
    head_dim = query.shape[-1]
    for compiled in _compiled_head_dims():
        if head_dim == compiled:
            dense_dtype = None if bias.dense is None else bias.dense.dtype
            return _covers(query.device.index, query.dtype, compiled, int(bias.kind), int(bias.causal or 0),
                           bias.slopes is not None, dense_dtype, deterministic)
    return False


@torch.compiler.assume_constant_result
def _compiled_head_dims() -> tuple[int, ...]:
    """Head dims of the compiled kernels, read from their names ("fwd_sm80<NoBias, bfloat16, hd128>")."""
    found = (re.search(r"\bhd(\d+)\b", name) for name in _C.compiled_kernels())
    return tuple(sorted({int(match.group(1)) for match in found if match}))


_ALIGNED = 256  # a stand-in device address, aligned as a fresh allocation is
_SEQ = 128


@torch.compiler.assume_constant_result
def _covers(device_index, dtype, head_dim: int, kind: int, causal: int, has_slopes: bool, dense_dtype,
            deterministic: bool) -> bool:
    """covers_training() on plain values, which dynamo evaluates once per trace and keeps: one batch and head,
    128 queries and keys, contiguous and aligned (scale 1: no kernel refuses a scale)."""
    view = [_ALIGNED, _SEQ * head_dim, _SEQ * head_dim, head_dim]
    codes = _kernels._DTYPE_CODES
    problem = _kernels.problem_fields(codes.get(dtype, _C.DTYPE_FLOAT32), (1, 1, 1, _SEQ, _SEQ, head_dim), [view] * 4,
                                      lse_ptr=_ALIGNED)
    slopes = [_ALIGNED, 0, 1] if has_slopes else [0, 0, 0]
    dense = [0, _C.DTYPE_BOOL, 0, 0, 0, 0] if dense_dtype is None else [_ALIGNED, codes[dense_dtype], 0, 0, 0, 1]
    fields = [kind, causal, *slopes, *dense]
    grads = view * 4 + [0, 0, 0, 0]  # no bias gradient: a traced bias that requires grad runs on torch
    device = torch.device("cuda", device_index)
    return bool(_kernels.on_device(_C.select_forward, device, problem, 1.0, fields)[0]
                and _kernels.on_device(_C.select_backward, device, problem, 1.0, fields, grads, deterministic)[0])
