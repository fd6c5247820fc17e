"""Tensors to libsdpa: the integer layouts that cpp/src/bindings/module.cpp documents, and the calls.

This is the eager hot path: no validation beyond what libsdpa does, no host synchronization.
"""

from __future__ import annotations

import threading

import torch

from . import _C
from ._kernel_bias import BiasKind
from .variants import CausalVariant

# The integers this file hands the binding must mean what libsdpa means by them: checked once, at import,
# so that a renumbered enum fails loudly instead of running the wrong bias.
_CONTRACT = {
    "BIAS_NONE": BiasKind.NONE, "BIAS_ALIBI": BiasKind.ALIBI, "BIAS_DENSE": BiasKind.DENSE,
    "CAUSAL_NONE": 0, "CAUSAL_UPPER_LEFT": CausalVariant.UPPER_LEFT, "CAUSAL_LOWER_RIGHT": CausalVariant.LOWER_RIGHT,
    # the lengths problem_args(), bias_args() and grad_args() build
    "PROBLEM_FIELDS": 32, "BIAS_FIELDS": 11, "GRAD_FIELDS": 20,
}
_broken = {name: (int(value), getattr(_C, name, None)) for name, value in _CONTRACT.items()
           if getattr(_C, name, None) != int(value)}
if _broken:
    raise ImportError(f"sdpa_core._C does not match the Python side (name: (python, libsdpa)): {_broken}; "
                      f"rebuild the extension from this source tree")

# Query rows up to which libsdpa may run a split-KV decode kernel (with a workspace).
SPLIT_KV_MAX_SEQLEN_Q = _C.SPLIT_KV_MAX_SEQLEN_Q

_DTYPE_CODES = {
    torch.float16: _C.DTYPE_FLOAT16,
    torch.bfloat16: _C.DTYPE_BFLOAT16,
    torch.float32: _C.DTYPE_FLOAT32,
    torch.bool: _C.DTYPE_BOOL,
}


def dtype_code(dtype: torch.dtype) -> int:
    """libsdpa's code for a tensor dtype (float32 for any it has no kernel for: its checks then refuse)."""
    return _DTYPE_CODES.get(dtype, _C.DTYPE_FLOAT32)


def current_stream(device: torch.device) -> int:
    return torch._C._cuda_getCurrentRawStream(device.index) if device.type == "cuda" else 0


def problem_fields(dtype_code: int, shape: tuple[int, int, int, int, int, int], views, lse_ptr: int = 0,
                   stream: int = 0, num_splits: int = 0, varlen=(0, 0, 0, 0, 0, 0)) -> list[int]:
    """The binding's problem layout, the one place it is spelled out: dtype; (batch, heads_q, heads_kv,
    seqlen_q, seqlen_kv, head_dim); four (data_ptr, stride_batch, stride_head, stride_seq) views for q, k, v,
    o; lse pointer, stream, split count (0: libsdpa chooses; 1: no split); and the variable-length fields
    (cu_seqlens_q, cu_seqlens_kv, seqused_kv and page_table pointers, page_table_stride, page_size)."""
    q, k, v, o = views
    return [dtype_code, *shape, *q, *k, *v, *o, lse_ptr, stream, num_splits, *varlen]


def _bhsd(t: torch.Tensor) -> list[int]:
    """A (B, H, S, D) operand's view fields."""
    stride = t.stride()
    return [t.data_ptr(), stride[0], stride[1], stride[2]]


def problem_args(query, key, value, out, lse: torch.Tensor | None = None, num_splits: int = 0) -> list[int]:
    """problem_fields() for (B, H, S, D) tensors."""
    batch, heads_q, seq_len_q, head_dim = query.shape
    return problem_fields(dtype_code(query.dtype),
                          (batch, heads_q, key.shape[1], seq_len_q, key.shape[2], head_dim),
                          [_bhsd(t) for t in (query, key, value, out)], 0 if lse is None else lse.data_ptr(),
                          current_stream(query.device), num_splits)


def bias_args(bias, query, key) -> list[int]:
    slopes = [0, 0, 0]
    dense = [0, _C.DTYPE_BOOL, 0, 0, 0, 0]
    if bias.slopes is not None:
        s = bias.slopes
        slopes = [s.data_ptr(), s.stride(0), s.stride(1)] if s.dim() == 2 else [s.data_ptr(), 0, s.stride(0)]
    if bias.dense is not None:
        # expand() gives broadcast dimensions stride 0, which is how the kernel reads them
        d = bias.dense.expand(query.shape[0], query.shape[1], query.shape[2], key.shape[2])
        dense = [d.data_ptr(), _DTYPE_CODES[d.dtype], *d.stride()]
    return [int(bias.kind), int(bias.causal or 0), *slopes, *dense]


def grad_args(grad_out, grad_q, grad_k, grad_v, grad_bias: torch.Tensor | None = None) -> list[int]:
    """(pointer, batch, head and seq strides) of each gradient; grad_bias None is the null view: no bias
    gradient wanted."""
    fields = []
    for t in (grad_out, grad_q, grad_k, grad_v):
        stride = t.stride()
        fields += [t.data_ptr(), stride[0], stride[1], stride[2]]
    if grad_bias is None:
        return fields + [0, 0, 0, 0]
    stride = grad_bias.stride()
    return fields + [grad_bias.data_ptr(), stride[0], stride[1], stride[2]]


def bias_grad_shape(query, key) -> tuple[int, int, int, int]:
    """(B, Hq, Sq, Skv): the kernel writes the bias gradient for every query head and position, whatever
    the bias broadcasts along; the caller sums it down to the bias's shape."""
    return query.shape[0], query.shape[1], query.shape[2], key.shape[2]


def empty_bias_grad(query, key) -> torch.Tensor:
    """The tensor the backward kernel writes the bias gradient into: contiguous, the query's dtype."""
    return torch.empty(bias_grad_shape(query, key), dtype=query.dtype, device=query.device)


def _bias_grad_stand_in(query, key) -> list[int]:
    """grad_args()'s grad_bias fields for a select call: the query's (aligned) pointer with the strides that
    empty_bias_grad() gives, so libsdpa judges exactly the layout the backward will write."""
    _, heads, seq_q, seq_kv = bias_grad_shape(query, key)
    return [query.data_ptr(), heads * seq_q * seq_kv, seq_q * seq_kv, seq_kv]


def on_device(fn, device: torch.device, *args):
    """fn(*args) with ``device`` current: libsdpa launches on the current device."""
    if device.index != torch.cuda.current_device():
        with torch.cuda.device(device):
            return fn(*args)
    return fn(*args)


def try_forward(query, key, value, bias, scale: float, out: torch.Tensor | None = None,
                num_splits: int = 0) -> torch.Tensor | None:
    """The fused kernel's output, or None when libsdpa has no kernel for these inputs. ``out`` defaults to a
    tensor laid out like query."""
    if out is None:
        out = torch.empty_like(query)  # keeps query's layout; several times cheaper than torch.empty(shape, ...)
    return out if _run_forward(query, key, value, bias, scale, out, None, num_splits) else None


def try_forward_lse(query, key, value, bias, scale: float, out: torch.Tensor | None = None,
                    num_splits: int = 0) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(output, log-sum-exp), what the fused backward reads, or None when libsdpa has no kernel. The LSE is
    (B, Hq, Sq) float32, contiguous (libsdpa's layout); ``out`` defaults to a tensor laid out like query."""
    out = torch.empty_like(query) if out is None else out
    lse = torch.empty(query.shape[:3], dtype=torch.float32, device=query.device)
    return (out, lse) if _run_forward(query, key, value, bias, scale, out, lse, num_splits) else None


def _run_forward(query, key, value, bias, scale: float, out, lse, num_splits: int = 0) -> bool:
    """Launches the fused forward into ``out`` (and ``lse`` when given); False when libsdpa has no kernel."""
    problem, fields = problem_args(query, key, value, out, lse, num_splits), bias_args(bias, query, key)
    return launch(problem, fields, scale, query.device)


def _varlen_problem(query, key, value, bias, cu_seq_q, cu_seq_k, seqused_k, block_table, max_q: int, max_k: int,
                    num_splits: int, out, lse) -> tuple[list[int], list[int]]:
    """The binding's (problem, bias) fields for a variable-length batch: query and out (Tq, Hq, D),
    key/value packed (Tk, Hkv, D) or a page pool (pages, page_size, Hkv, D), the int32 index tensors on the
    device as torch's varlen_attn takes them, lse (Tq, Hq) float32 or None."""
    tokens = lambda t: [t.data_ptr(), 0, t.stride(1), t.stride(0)]
    if block_table is not None:
        kv = lambda t: [t.data_ptr(), t.stride(0), t.stride(2), t.stride(1)]
        pages = [block_table.data_ptr(), block_table.stride(0), key.shape[1]]
    else:
        kv, pages = tokens, [0, 0, 0]
    ptr = lambda t: 0 if t is None else t.data_ptr()
    shape = (cu_seq_q.shape[0] - 1, query.shape[1], key.shape[-2], max_q, max_k, query.shape[2])
    problem = problem_fields(dtype_code(query.dtype), shape,
                             [tokens(query), kv(key), kv(value), tokens(out)], ptr(lse), current_stream(query.device),
                             num_splits, (cu_seq_q.data_ptr(), ptr(cu_seq_k), ptr(seqused_k), *pages))
    slopes = [0, 0, 0] if bias.slopes is None else [bias.slopes.data_ptr(), 0, bias.slopes.stride(0)]
    return problem, [int(bias.kind), int(bias.causal or 0), *slopes, 0, _C.DTYPE_BOOL, 0, 0, 0, 0]


def try_forward_varlen(query, key, value, bias, scale: float, cu_seq_q, cu_seq_k, seqused_k, block_table,
                       max_q: int, max_k: int, num_splits: int, out, lse) -> bool:
    """One launch for a whole variable-length batch (_varlen_problem's arguments): libsdpa's split-KV decode
    kernels for max_q <= 16, its prefill kernels beyond. False when libsdpa has no kernel for it. Reads no
    tensor data on the host."""
    problem, fields = _varlen_problem(query, key, value, bias, cu_seq_q, cu_seq_k, seqused_k, block_table, max_q,
                                      max_k, num_splits, out, lse)
    return launch(problem, fields, scale, query.device)


def select_varlen(query, key, value, bias, scale: float, cu_seq_q, cu_seq_k, seqused_k, block_table, max_q: int,
                  max_k: int, num_splits: int) -> tuple[str, str, str]:
    """(kernel, reason, details) that try_forward_varlen would run for these inputs, without launching:
    the kernel's name and what it does for them, or "" and why no kernel takes them."""
    problem, fields = _varlen_problem(query, key, value, bias, cu_seq_q, cu_seq_k, seqused_k, block_table, max_q,
                                      max_k, num_splits, query, None)
    kernel, reason = _C.select_forward(problem, scale, fields)
    return kernel, reason, _C.describe_forward(problem, scale, fields) if kernel else ""


def launch(problem: list[int], fields: list[int], scale: float, device) -> bool:
    """libsdpa's forward on these fields, with the workspace its kernel takes (a split-KV decode kernel's
    partial results, the Hopper forward's tile counter); False: no kernel."""
    if torch.cuda.is_current_stream_capturing():
        # A CUDA graph keeps the workspace's address: it gets memory of its own from torch's allocator (the
        # graph's pool), never the kept buffer below, which may be replaced by a larger one later.
        workspace_bytes = _C.forward_workspace_size(problem, scale, fields)
        workspace = torch.empty(workspace_bytes, dtype=torch.uint8, device=device) if workspace_bytes else None
        return not on_device(_C.forward, device, problem, scale, fields,
                             0 if workspace is None else workspace.data_ptr(), workspace_bytes)
    # Eager: a buffer kept per (device, stream, thread) and grown on demand, so that a call makes one libsdpa
    # call and no allocation. Calls on one stream run in order, so reusing it between them is safe;
    # another thread or stream gets a buffer of its own.
    key = (device, problem[_STREAM_FIELD], threading.get_ident())
    kept = _workspaces.get(key)
    size = 0 if kept is None else kept.numel()
    reason, needed = on_device(_C.forward_in_workspace, device, problem, scale, fields,
                               0 if kept is None else kept.data_ptr(), size)
    if needed:
        workspace = torch.empty(max(needed, 2 * size), dtype=torch.uint8, device=device)
        if workspace.numel() <= _MAX_KEPT_WORKSPACE:
            _workspaces[key] = workspace
        reason, needed = on_device(_C.forward_in_workspace, device, problem, scale, fields, workspace.data_ptr(),
                                   workspace.numel())
    return not reason and not needed


_STREAM_FIELD = 24  # problem_fields(): dtype, 6 shape fields, 4 views of 4, the LSE pointer, then the stream
_MAX_KEPT_WORKSPACE = 64 << 20  # a larger workspace (a huge forced num_splits) is allocated per call instead
_workspaces: dict[tuple, torch.Tensor] = {}


def try_backward(query, key, value, out, lse, grad_out, bias, scale: float, deterministic: bool,
                 grads: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                 grad_bias: torch.Tensor | None = None):
    """(dq, dk, dv) from the fused backward kernel, or None when libsdpa has none for these inputs.

    ``query``, ``key``, ``value``, ``out`` and ``lse`` are what try_forward_lse() read and wrote. ``grads``
    are the tensors to write; by default each is laid out like its input (dk and dv have key's heads: the
    kernel sums each query-head group). ``grad_bias`` (a dense additive bias only; empty_bias_grad()'s
    layout) is filled with the bias gradient for every (b, query head, i, j) when given. grad_out is copied
    first if the kernel cannot read it as it is (autograd hands ``out.sum()`` an expanded tensor whose every
    stride is 0)."""
    if grad_out.stride(-1) != 1 or not is_aligned(grad_out):
        grad_out = grad_out.clone(memory_format=torch.contiguous_format)
    dq, dk, dv = (torch.empty_like(query), torch.empty_like(key), torch.empty_like(value)) if grads is None else grads
    problem, fields = problem_args(query, key, value, out, lse), bias_args(bias, query, key)
    gfields = grad_args(grad_out, dq, dk, dv, grad_bias)
    workspace_bytes = _C.backward_workspace_size(problem, scale, fields, gfields, deterministic)
    # libsdpa never allocates; torch's caching allocator makes this cheap (and CUDA-graph safe)
    workspace = torch.empty(workspace_bytes, dtype=torch.uint8, device=query.device) if workspace_bytes else None
    reason = on_device(_C.backward, query.device, problem, scale, fields, gfields, deterministic,
                        0 if workspace is None else workspace.data_ptr(), workspace_bytes)
    return None if reason else (dq, dk, dv)


def select(query, key, value, bias, scale: float) -> tuple[str, str]:
    """(kernel name, "") or ("", reason) for these inputs, without launching. Reads no tensor data."""
    args = problem_args(query, key, value, query)  # the output is allocated like the query
    return _C.select_forward(args, scale, bias_args(bias, query, key))


def describe(query, key, value, bias, scale: float) -> str:
    """What the forward kernel select() names does for these inputs beyond its name (libsdpa's split-KV
    decode kernels: packing, split count, key layout, workspace), or "". Reads no tensor data."""
    return _C.describe_forward(problem_args(query, key, value, query), scale, bias_args(bias, query, key))


def _select_grads(query, key, value, bias_grad: bool) -> list[int]:
    """grad_args() as the backward will pass them: the output's gradient and dq laid out like the query, dk
    and dv like key and value, and (``bias_grad``) the bias gradient as empty_bias_grad() allocates it."""
    fields = grad_args(query, query, key, value)
    return (fields[:16] + _bias_grad_stand_in(query, key)) if bias_grad else fields


def select_backward(query, key, value, bias, scale: float, deterministic: bool,
                    bias_grad: bool = False) -> tuple[str, str]:
    """select() for the backward of a forward on these inputs (``bias_grad``: that also writes the dense
    bias's gradient). The query's (device) pointer stands in for the LSE that the forward would write.
    Reads no tensor data."""
    problem = problem_args(query, key, value, query, query)
    return _C.select_backward(problem, scale, bias_args(bias, query, key), _select_grads(query, key, value, bias_grad),
                              deterministic)


def select_training(query, key, value, bias, scale: float, deterministic: bool,
                    bias_grad: bool = False) -> tuple[str, str, str]:
    """(forward kernel, backward kernel, "") when libsdpa runs both passes of a training call (``bias_grad``:
    whose backward also writes the dense bias's gradient), else the first refusal as ("", "", reason) or
    (forward kernel, "", reason). Reads no tensor data."""
    forward, reason = select(query, key, value, bias, scale)
    if not forward:
        return "", "", reason
    backward, reason = select_backward(query, key, value, bias, scale, deterministic, bias_grad)
    return forward, backward, reason


def aligned(query, key, value):
    """The inputs, each copied to a fresh contiguous tensor if its data pointer or a stride breaks the
    16-byte alignment the kernels load with. A copy costs far less than the attention; torch's own kernels
    have given wrong answers on such layouts (a 2-byte-offset slice, fp16, d256, GQA)."""
    return tuple(t if is_aligned(t) else t.clone(memory_format=torch.contiguous_format)
                 for t in (query, key, value))


def is_aligned(t: torch.Tensor) -> bool:
    """16-byte aligned data pointer, and every row stride a multiple of 8 elements (a dimension of size 1
    never moves the pointer, so its stride does not matter). On the hot path: no loop for 4-D tensors."""
    if t.data_ptr() % 16:
        return False
    return rows_aligned(t.shape, t.stride())


def rows_aligned(shape, stride) -> bool:
    """is_aligned() without the pointer: every stride but the last a multiple of 8 elements where its
    dimension has more than one row."""
    if len(shape) == 4:
        return ((shape[0] == 1 or stride[0] % 8 == 0) and (shape[1] == 1 or stride[1] % 8 == 0)
                and (shape[2] == 1 or stride[2] % 8 == 0))
    return all(size == 1 or step % 8 == 0 for size, step in zip(shape[:-1], stride[:-1]))
