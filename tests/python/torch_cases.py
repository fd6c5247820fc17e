"""Side-by-side runs of torch's SDPA and sdpa_core's over the input space torch's own SDPA tests cover.

A ``Case`` is one call: shapes, dtype, device, mask, is_causal, scale, enable_gqa. ``run_case`` builds the
inputs from the case's seed, calls ``torch.nn.functional.scaled_dot_product_attention`` and
``sdpa_core.scaled_dot_product_attention`` on the same tensors, and returns every difference as a readable
string (empty when the two agree). The rules (project issue #10):

* torch raises -> sdpa_core raises, and the exception is a RuntimeError (a subclass that is also a
  ValueError or TypeError is fine);
* torch returns -> sdpa_core returns a tensor of the same shape, dtype and device, within the dtype's
  tolerance of torch's values, NaN wherever torch has NaN;
* a fully masked row (every key masked by False, -inf or a value below -2.3e38, e.g. finfo(float32).min)
  is sdpa_core's documented difference: it must be exactly 0, whatever torch gives there;
* where torch's own output is not the math (a float64 oracle computed here says so: torch 2.13's CPU
  kernels give NaN for is_causal with a negative scale, and wrong values for float64 queries with a
  float32 mask), sdpa_core is held to the math instead, and the torch bug is listed apart (not a failure).

sdpa_core's own biases (TensorBias, CausalBias, AlibiBias) have no torch counterpart: torch gets the same
bias as a mask materialized here, from the formulas, never from sdpa_core.
"""

from __future__ import annotations

import dataclasses
import random
import re
import warnings

import torch
import torch.nn.functional as F
from torch.nn.attention import bias as torch_bias

import sdpa_core
from torch_case_masks import _keep_causal, _short, _shape_text, build_masks, Mask  # noqa: F401  (the sweep's masks)

# max |sdpa_core - torch| / max(1, max |torch|), plus twice torch's own error against the float64 oracle.
# torch further than five of these from the oracle is a torch bug (see the module docstring).
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}

# sdpa_core treats additive values below this as -inf (finfo(float32).min and finfo(bfloat16).min are).
NEG_INF_THRESHOLD = -2.3e38

CPU_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
CUDA_DTYPES = (torch.float16, torch.bfloat16)

SEQ_PAIRS = [(1, 1), (1, 17), (17, 1), (17, 17), (17, 113), (113, 17), (113, 113)]
HEAD_DIMS = [(8, 8), (17, 17), (64, 64), (8, 17), (64, 8), (17, 64)]  # (E, Ev)
SCALES = [None, 0.5, -1.3]

# The leading ("batch") dims of the query for each input rank; the last of them is the head dim that
# enable_gqa groups (dim -3, as in torch).
LEADING = {2: (), 3: (3,), 4: (2, 3), 5: (2, 2, 2)}


# --------------------------------------------------------------------------------------------- cases

@dataclasses.dataclass(frozen=True)
class Case:
    group: str
    q_shape: tuple
    k_shape: tuple
    v_shape: tuple
    dtype: torch.dtype
    mask: Mask | None = None
    is_causal: bool = False
    scale: float | None = None
    enable_gqa: bool = False
    device: str = "cpu"
    layout: str = "contiguous"  # or "transposed": q/k/v are (.., S, H, E) tensors viewed as (.., H, S, E)
    seed: int = 0

    def describe(self) -> str:
        parts = [f"[{self.group}] {self.device} {_short(self.dtype)}",
                 f"q{_shape_text(self.q_shape)} k{_shape_text(self.k_shape)} v{_shape_text(self.v_shape)}"]
        if self.layout != "contiguous":
            parts.append(self.layout)
        parts.append("mask=" + ("None" if self.mask is None else self.mask.describe()))
        if self.is_causal:
            parts.append("is_causal")
        if self.scale is not None:
            parts.append(f"scale={self.scale}")
        if self.enable_gqa:
            parts.append("enable_gqa")
        return " ".join(parts)


def _make(t_shape, dtype, device, layout) -> torch.Tensor:
    if layout == "transposed" and len(t_shape) >= 3:
        swapped = t_shape[:-3] + (t_shape[-2], t_shape[-3], t_shape[-1])
        return torch.randn(swapped).to(device=device, dtype=dtype).transpose(-2, -3)
    return torch.randn(t_shape).to(device=device, dtype=dtype)


def _dead_rows(torch_mask, is_causal, seq_q, seq_kv, out_shape) -> torch.Tensor | None:
    """Bool broadcast to out_shape[:-1] + (1,): True where torch's arguments mask every key of the row."""
    keep = torch.ones(seq_q, seq_kv, dtype=torch.bool)
    if is_causal:
        keep = keep & _keep_causal("upper_left", seq_q, seq_kv)
    if isinstance(torch_mask, torch_bias.CausalBias):
        variant = "lower_right" if torch_mask.variant == torch_bias.CausalVariant.LOWER_RIGHT else "upper_left"
        keep = keep & _keep_causal(variant, seq_q, seq_kv)
    elif isinstance(torch_mask, torch.Tensor):
        m = torch_mask.detach().cpu()
        m_keep = m if m.dtype == torch.bool else ~(torch.isneginf(m) | (m.double() < NEG_INF_THRESHOLD))
        keep = keep & m_keep
    dead = ~keep.any(dim=-1, keepdim=True)
    try:
        return torch.broadcast_to(dead, tuple(out_shape[:-1]) + (1,))
    except RuntimeError:
        return None


def _exc(e: BaseException) -> str:
    return f"{type(e).__name__}({str(e).splitlines()[0][:140] if str(e) else ''})"


def _call_torch(q, k, v, mask, is_causal, scale, enable_gqa):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=is_causal,
                                              scale=scale, enable_gqa=enable_gqa)


def _call_ours(q, k, v, mask, is_causal, scale, enable_gqa):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the documented deprecation of Tensor masks
        return sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=is_causal,
                                                      scale=scale, enable_gqa=enable_gqa)


def oracle(q, k, v, torch_mask, is_causal: bool, scale, enable_gqa: bool) -> torch.Tensor | None:
    """The same call as plain float64 math on the CPU, from the arguments torch got (independent of both
    implementations): softmax(q k^T * scale + mask) v. Fully masked rows come out NaN (never compared).
    None when the arguments do not broadcast this way."""
    q, k, v = (t.detach().cpu().to(torch.float64) for t in (q, k, v))
    if enable_gqa and k.dim() >= 3 and q.dim() >= 3 and k.shape[-3] not in (0, q.shape[-3]):
        group = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(group, dim=-3), v.repeat_interleave(group, dim=-3)
    seq_q, seq_kv, dim = q.shape[-2], k.shape[-2], q.shape[-1]
    try:
        if dim == 0:  # no features: every score is 0, whatever the scale
            s = torch.zeros(torch.broadcast_shapes(q.shape[:-1], k.shape[:-2]) + (seq_kv,), dtype=torch.float64)
        else:
            s = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / dim ** 0.5 if scale is None else scale)
        if is_causal:
            s = s.masked_fill(~_keep_causal("upper_left", seq_q, seq_kv), float("-inf"))
        if isinstance(torch_mask, torch_bias.CausalBias):
            variant = "lower_right" if torch_mask.variant == torch_bias.CausalVariant.LOWER_RIGHT else "upper_left"
            s = s.masked_fill(~_keep_causal(variant, seq_q, seq_kv), float("-inf"))
        elif isinstance(torch_mask, torch.Tensor):
            m = torch_mask.detach().cpu()
            s = s.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else s + m.to(torch.float64)
        return torch.matmul(torch.softmax(s, dim=-1), v)
    except RuntimeError:
        return None


@dataclasses.dataclass
class Outcome:
    """What one case found: differences (sdpa_core breaks a rule) and torch bugs (torch's own output
    is not the math, as float64 shows; there sdpa_core is held to the math instead of torch)."""

    differences: list[str] = dataclasses.field(default_factory=list)
    torch_bugs: list[str] = dataclasses.field(default_factory=list)


def _max_at(err: torch.Tensor, where: torch.Tensor) -> tuple[float, tuple]:
    masked = torch.where(where, err, torch.zeros_like(err))
    flat = int(masked.flatten().argmax())
    return masked.flatten()[flat].item(), tuple(int(x) for x in torch.unravel_index(torch.tensor(flat), err.shape))


def compare(desc: str, ours, theirs: torch.Tensor, ref: torch.Tensor | None, dead: torch.Tensor | None,
            dtype) -> Outcome:
    """sdpa_core's output against torch's, by the rules in the module docstring. ``ref`` is the float64
    oracle: where torch's output is not the math (NaN where the math is finite, or off by more than five
    times the dtype's tolerance) torch has a bug, and sdpa_core is compared with the math there."""
    found = Outcome()
    if not isinstance(ours, torch.Tensor):
        found.differences.append(f"{desc}: sdpa_core returned {type(ours).__name__}, not a Tensor")
        return found
    if ours.shape != theirs.shape or ours.dtype != theirs.dtype or ours.device != theirs.device:
        found.differences.append(f"{desc}: sdpa_core returned {tuple(ours.shape)} {ours.dtype} on {ours.device}; "
                                 f"torch {tuple(theirs.shape)} {theirs.dtype} on {theirs.device}")
        return found
    a = ours.detach().cpu().to(torch.float64)
    b = theirs.detach().cpu().to(torch.float64)
    if ref is not None and ref.shape != b.shape:
        ref = None
    if a.numel() == 0:
        return found
    live = torch.ones_like(b, dtype=torch.bool)
    if dead is not None:
        dead_full = dead.cpu().expand_as(a)
        live = ~dead_full
        bad = dead_full & (a != 0)  # NaN != 0 too
        if bad.any():
            found.differences.append(
                f"{desc}: fully masked rows must be exactly 0; {int(bad.sum())} values are not (e.g. "
                f"{a[bad][0].item()!r}; torch gives {b[bad][0].item()!r})")
    scale_of = b[live & torch.isfinite(b)]
    norm = max(1.0, scale_of.abs().max().item() if scale_of.numel() else 1.0)
    tol = TOLERANCE[dtype] * norm
    # Where torch is wrong (by the float64 math), the math is the expected value.
    expected = b.clone()
    torch_wrong = torch.zeros_like(live)
    if ref is not None:
        ref_nan = torch.isnan(ref)
        torch_wrong = live & ((torch.isnan(b) & ~ref_nan) | ((b - ref).abs() > 5 * tol))
        expected = torch.where(torch_wrong, ref, b)
        if torch_wrong.any():
            err, where = _max_at((b - ref).abs().nan_to_num(float("inf")), torch_wrong)
            found.torch_bugs.append(
                f"{desc}: torch is not the float64 math at {int(torch_wrong.sum())} positions (at {where}: torch "
                f"{b[where].item():.6g}, math {ref[where].item():.6g}); sdpa_core gives {a[where].item():.6g}")
    want_nan = torch.isnan(expected) & live
    if (want_nan & ~torch.isnan(a)).any():
        found.differences.append(f"{desc}: torch gives NaN at {int((want_nan & ~torch.isnan(a)).sum())} positions "
                                 f"where sdpa_core does not")
    ours_nan = torch.isnan(a) & live & ~want_nan
    if (ours_nan & ~torch_wrong).any():
        found.differences.append(f"{desc}: sdpa_core gives NaN at {int((ours_nan & ~torch_wrong).sum())} positions "
                                 f"where torch does not" + (" (nor the math)" if ref is not None else ""))
    if (ours_nan & torch_wrong).any():
        count = int((ours_nan & torch_wrong).sum())
        found.differences.append(f"{desc}: sdpa_core reproduces a torch bug: NaN at {count} positions where the "
                                 f"float64 math is finite (torch is NaN or wrong there too)")
    checked = live & ~want_nan & ~torch.isnan(a)
    if checked.any():
        # torch's own rounding error (against the math) widens the tolerance for low precision
        slack = 0.0
        if ref is not None:
            right = checked & ~torch_wrong & torch.isfinite(ref)
            if right.any():
                slack = 2 * (b - ref).abs()[right].max().item()
        err_all = (a - expected).abs().nan_to_num(float("inf"))
        err, where = _max_at(err_all, checked)
        allowed = tol + slack + (tol if torch_wrong[where] else 0.0)
        if not err <= allowed:
            against = "the float64 math (torch is wrong here)" if torch_wrong[where] else "torch"
            found.differences.append(
                f"{desc}: max |sdpa_core - {against.split(' (')[0] if 'math' not in against else 'math'}| = "
                f"{err:.3g} > allowed {allowed:.3g} at {where} (sdpa_core {a[where].item():.6g}, torch "
                f"{b[where].item():.6g}" + ("" if ref is None else f", math {ref[where].item():.6g}") + ")")
    return found


def run_case(case: Case) -> Outcome:
    """Every difference between torch and sdpa_core on this case (none: they agree)."""
    desc = case.describe()
    torch.default_generator.manual_seed(case.seed)  # CPU only: torch.manual_seed also queues CUDA seeding
    q = _make(case.q_shape, case.dtype, case.device, case.layout)
    k = _make(case.k_shape, case.dtype, case.device, case.layout)
    v = _make(case.v_shape, case.dtype, case.device, case.layout)
    built = build_masks(case.mask, case.is_causal, case.q_shape, case.k_shape[-2], case.dtype)
    for attr in ("torch_mask", "ours_mask"):
        m = getattr(built, attr)
        if isinstance(m, torch.Tensor) and not isinstance(m, torch_bias.CausalBias):
            setattr(built, attr, m.to(case.device))
        elif isinstance(m, sdpa_core.TensorBias):
            m.bias = m.bias.to(case.device)
        elif isinstance(m, sdpa_core.AlibiBias):
            m.slopes = m.slopes.to(case.device)
    if _torch_faults_on(case, built.torch_mask):
        return _math_only(desc, case, q, k, v, built)
    try:
        theirs = _call_torch(q, k, v, built.torch_mask, built.torch_is_causal, case.scale, case.enable_gqa)
        torch_error = None
    except Exception as e:  # noqa: BLE001
        theirs, torch_error = None, e
    if built.ours_error is not None:
        ours, ours_error = None, built.ours_error
    else:
        try:
            ours = _call_ours(q, k, v, built.ours_mask, built.ours_is_causal, case.scale, case.enable_gqa)
            ours_error = None
        except Exception as e:  # noqa: BLE001
            ours, ours_error = None, e
    if ours is None and ours_error is None:
        return Outcome([f"{desc}: sdpa_core returns None instead of a tensor"])
    if theirs is None and torch_error is None:
        # torch 2.11 returned None (an undefined tensor) for an empty batch or head dim on CUDA (H200,
        # 2026-11-26); sdpa_core is held to the float64 math there.
        torch_error = RuntimeError("torch returned None instead of a tensor")
        if ours_error is None:
            return _held_to_the_math(desc, case, q, k, v, built, ours, torch_error)
    if torch_error is not None:
        if ours_error is None and _accepted_on_purpose(torch_error):
            return _held_to_the_math(desc, case, q, k, v, built, ours, torch_error)
        if ours_error is None:
            return Outcome([f"{desc}: torch raises {_exc(torch_error)} but sdpa_core returns a result"])
        if not isinstance(ours_error, RuntimeError):
            return Outcome([f"{desc}: torch raises {_exc(torch_error)}; sdpa_core raises {_exc(ours_error)}, which "
                            f"is not a RuntimeError"])
        return Outcome()
    if ours_error is not None:
        return Outcome([f"{desc}: torch returns a result but sdpa_core raises {_exc(ours_error)}"])
    ref = oracle(q, k, v, built.torch_mask, built.torch_is_causal, case.scale, case.enable_gqa)
    dead = _dead_rows(built.torch_mask, built.torch_is_causal, case.q_shape[-2], case.k_shape[-2], theirs.shape)
    return compare(desc, ours, theirs, ref, dead, case.dtype)


# Calls torch rejects that sdpa_core accepts on purpose (README, "Intended differences"): a Tensor mask with
# is_causal=True (torch 2.13 applies both on its CPU flash path and raises on every other path; sdpa_core
# always applies both), and a 1-D mask on 4-D/5-D inputs (torch's 4-D path indexes dim -2 of the mask and
# raises IndexError; the broadcast is valid, and torch accepts it on 3-D inputs).
_ACCEPTED_ON_PURPOSE = ("Explicit attn_mask should not be set when is_causal=True", "Dimension out of range",
                        # torch's CUDA kernels refuse a float32 mask with half inputs (its CPU path takes it);
                        # sdpa_core takes it on every device
                        "invalid dtype for bias - should match query's dtype")


def _accepted_on_purpose(error: BaseException) -> bool:
    return any(text in str(error) for text in _ACCEPTED_ON_PURPOSE)


def _held_to_the_math(desc, case, q, k, v, built, ours, torch_error) -> Outcome:
    """A call sdpa_core accepts where torch raises: sdpa_core must give the float64 math's answer."""
    ref = oracle(q, k, v, built.torch_mask, built.torch_is_causal, case.scale, case.enable_gqa)
    if ref is None:
        return Outcome([f"{desc}: torch raises {_exc(torch_error)}; sdpa_core returns a result the float64 "
                        f"math cannot check"])
    dead = _dead_rows(built.torch_mask, built.torch_is_causal, case.q_shape[-2], case.k_shape[-2], ref.shape)
    found = compare(desc, ours, ref.to(case.dtype).to(ours.device), ref, dead, case.dtype)
    found.torch_bugs.append(f"{desc}: torch raises {_exc(torch_error)}; sdpa_core accepts it on purpose and was "
                            f"held to the float64 math")
    return found


def _torch_faults_on(case: Case, torch_mask) -> bool:
    """torch 2.11's CUDA kernels faulted (misaligned address, H200, 2026-11-26) on masks broadcast along the
    keys: a bool (Sq, 1) mask with f16 q(3,17,64) k(3,17,64) v(3,17,8), and a float32 (Sq, 1) mask with
    bf16 q(2,3,17,64) k(2,3,113,64) (cuDNN: "mha_graph.execute ... is_good()"); the fault poisons the CUDA
    context for every later case. Such cases do not call torch: sdpa_core is held to the float64 math."""
    if case.device == "cuda" and any(0 in shape for shape in (case.q_shape, case.k_shape, case.v_shape)):
        # Empty inputs: torch 2.11 returned None for an empty batch, and its CausalBias path died of a
        # floating point exception (SIGFPE, the whole process) on the H200, 2026-11-26.
        return True
    return (case.device == "cuda" and isinstance(torch_mask, torch.Tensor)
            and not isinstance(torch_mask, torch_bias.CausalBias)
            and torch_mask.dim() >= 1 and torch_mask.shape[-1] == 1 and case.k_shape[-2] > 1)


def _math_only(desc, case, q, k, v, built) -> Outcome:
    if built.ours_error is not None:  # sdpa_core refuses the case on purpose; torch cannot be asked
        return Outcome()
    try:
        ours = _call_ours(q, k, v, built.ours_mask, built.ours_is_causal, case.scale, case.enable_gqa)
    except Exception as e:  # noqa: BLE001
        return Outcome([f"{desc}: sdpa_core raises {_exc(e)} on a case held to the math (torch not called)"])
    ref = oracle(q, k, v, built.torch_mask, built.torch_is_causal, case.scale, case.enable_gqa)
    if ref is None:
        return Outcome()
    dead = _dead_rows(built.torch_mask, built.torch_is_causal, case.q_shape[-2], case.k_shape[-2], ref.shape)
    found = compare(desc, ours, ref.to(case.dtype).to(ours.device), ref, dead, case.dtype)
    found.torch_bugs.append(f"{desc}: torch not called (its CUDA kernels fault on this case); held to the float64 math")
    return found


# ---------------------------------------------------------------------------------------- the sweep

def _shapes(rank, seq_q, seq_kv, e, ev, heads_kv=None, leading=None):
    leading = LEADING[rank] if leading is None else leading
    kv_leading = leading if heads_kv is None else leading[:-1] + (heads_kv,)
    return leading + (seq_q, e), kv_leading + (seq_kv, e), kv_leading + (seq_kv, ev)


def tensor_masks(rank: int, query_dtype) -> list[Mask]:
    """Plain Tensor masks of ranks 1..4 (and 5 for 5-D inputs), incl. broadcast dims."""
    shapes = [("Skv",), ("Sq", "Skv"), (1, "Skv"), ("Sq", 1), ("L-1", "Sq", "Skv"), (1, 1, "Skv")]
    if rank >= 4:
        shapes += [("L-2", 1, "Sq", "Skv"), (1, "L-1", 1, "Skv")]  # on 5-D: broadcast over the first dim
    else:
        shapes += [(1, 1, "Sq", "Skv")]  # more dims than the input: torch decides
    if rank == 5:
        shapes += [("L-3", 1, 1, "Sq", "Skv")]
    masks = []
    for i, shape in enumerate(shapes):
        masks.append(Mask("tensor", "bool", shape))
        masks.append(Mask("tensor", ["float_q", "float32"][i % 2] if query_dtype != torch.float32 else "float_q",
                          shape))
    masks += [Mask("tensor", "bool_dead", ("Sq", "Skv")), Mask("tensor", "float_neginf", ("L-1", "Sq", "Skv")),
              Mask("tensor", "float_min", ("Sq", "Skv"))]
    if query_dtype != torch.float32:
        masks += [Mask("tensor", "float_min", ("Sq", "Skv"), float_dtype=torch.float32),
                  Mask("tensor", "float_neginf", ("Sq", "Skv"), float_dtype=torch.float32)]
    if query_dtype in (torch.float16, torch.float32):
        masks += [Mask("tensor", "float_q", ("Sq", "Skv"), float_dtype=torch.bfloat16)]  # torch rejects
    masks += [Mask("tensor", "float_q", ("Sq", "Skv"), float_dtype=torch.float64)]  # torch: only for float64
    return masks


def object_masks(rank: int) -> list[Mask]:
    masks = [Mask("torch_causal", variant="upper_left"), Mask("torch_causal", variant="lower_right"),
             Mask("torch_variant", variant="upper_left"), Mask("torch_variant", variant="lower_right"),
             Mask("causal_bias", variant="upper_left"), Mask("causal_bias", variant="lower_right"),
             Mask("tensor_bias", "bool_dead", ("Skv",)), Mask("tensor_bias", "float_q", ("Sq", "Skv")),
             Mask("tensor_bias", "float32", ("L-1", 1, "Skv")), Mask("tensor_bias", "float_neginf", ("Sq", "Skv")),
             Mask("tensor_bias", "bool", (1, "L-1", "Sq", "Skv"))]
    if rank >= 4:
        masks += [Mask("alibi"), Mask("alibi", variant="upper_left"), Mask("alibi", variant="lower_right"),
                  Mask("alibi", variant="lower_right", torch_enum=True)]
    if rank == 4:
        masks += [Mask("alibi", per_batch=True), Mask("tensor_bias", "bool", ("L-2", 1, "Sq", "Skv"))]
    return masks


def sweep(device: str = "cpu", dtypes=CPU_DTYPES) -> list[Case]:
    """The deterministic list of cases. Every (rank, dtype, mask, seq pair) appears; head dims and scale
    are drawn from a seeded generator so that each mask meets several of them."""
    rng = random.Random(20240610)
    cases = []

    def add(group, q_shape, k_shape, v_shape, dtype, **kw):
        cases.append(Case(group, q_shape, k_shape, v_shape, dtype, device=device, seed=len(cases), **kw))

    for rank in (3, 4, 5):
        for d, dtype in enumerate(dtypes):
            # three sequence pairs per dtype, rotating, so that each mask meets all of them over the 4 CPU dtypes
            per_dtype = 3 if len(dtypes) > 2 else 4
            pairs = [SEQ_PAIRS[(per_dtype * d + j) % len(SEQ_PAIRS)] for j in range(per_dtype)]
            plain = [(None, False), (None, True)]
            plain += [(m, False) for m in tensor_masks(rank, dtype)]
            plain += [(m, False) for m in object_masks(rank)]
            # a mask together with is_causal: torch's CPU flash path applies both, its math path and its own
            # bias objects refuse
            plain += [(Mask("tensor", "bool", ("Sq", "Skv")), True),
                      (Mask("tensor", "float_q", ("L-1", 1, "Skv")), True),
                      (Mask("torch_causal", variant="lower_right"), True),
                      (Mask("tensor_bias", "float_q", ("Sq", "Skv")), True),
                      (Mask("alibi"), True) if rank >= 4 else (Mask("tensor_bias", "bool", ("Skv",)), True)]
            for mask, is_causal in plain:
                group = f"rank{rank}/" + ("none" if mask is None else mask.kind)
                for seq_q, seq_kv in pairs:
                    e, ev = rng.choice(HEAD_DIMS)
                    add(group, *_shapes(rank, seq_q, seq_kv, e, ev), dtype, mask=mask, is_causal=is_causal,
                        scale=rng.choice(SCALES))

    # grouped-query attention: Hq = 6, Hkv in 1, 2, 3
    gqa_masks = [(None, False), (None, True), (Mask("tensor", "bool", ("L-1", "Sq", "Skv")), False),
                 (Mask("tensor", "float_q", ("Sq", "Skv")), False),
                 (Mask("torch_causal", variant="lower_right"), False),
                 (Mask("tensor_bias", "float_q", ("L-1", 1, "Skv")), True),
                 (Mask("alibi", variant="lower_right"), False),
                 (Mask("causal_bias", variant="lower_right"), False)]
    for rank, leading in ((3, (6,)), (4, (2, 6)), (5, (2, 2, 6))):
        for dtype in dtypes:
            for mask, is_causal in gqa_masks:
                if mask is not None and mask.kind == "alibi" and rank == 3:
                    continue
                for heads_kv in (1, 2, 3):
                    seq_q, seq_kv = rng.choice(SEQ_PAIRS)
                    e, ev = rng.choice(HEAD_DIMS)
                    add(f"gqa/rank{rank}", *_shapes(rank, seq_q, seq_kv, e, ev, heads_kv, leading), dtype, mask=mask,
                        is_causal=is_causal, scale=rng.choice(SCALES), enable_gqa=True)

    # empty dims, as torch does them
    empty_masks = [(None, False), (None, True), (Mask("tensor", "bool", ("Sq", "Skv")), False),
                   (Mask("tensor", "float_q", ("L-1", "Sq", "Skv")), False),
                   (Mask("torch_causal", variant="lower_right"), False),
                   (Mask("causal_bias", variant="upper_left"), False),
                   (Mask("tensor_bias", "float_q", ("Sq", "Skv")), True)]
    for rank in (3, 4, 5):
        for what in ("batch", "heads", "seq_q", "seq_kv", "head_dim", "value_dim"):
            if what == "heads" and rank == 3:
                continue
            leading = list(LEADING[rank])
            seq_q, seq_kv, e, ev = 5, 7, 8, 8
            if what == "batch":
                leading[0] = 0
            elif what == "heads":
                leading[-1] = 0
            elif what == "seq_q":
                seq_q = 0
            elif what == "seq_kv":
                seq_kv = 0
            elif what == "head_dim":
                e = 0
            else:
                ev = 0
            for i, (mask, is_causal) in enumerate(empty_masks):  # dtype and scale rotate over the masks
                add(f"empty/{what}", *_shapes(rank, seq_q, seq_kv, e, ev, leading=tuple(leading)),
                    dtypes[(i + rank) % len(dtypes)], mask=mask, is_causal=is_causal, scale=(None, 0.5)[i % 2])

    # what else torch accepts: 2-D inputs, key/value broadcast over batch dims, head broadcast without
    # enable_gqa, key/value of lower rank, transposed layouts
    for dtype in dtypes:
        for i, (mask, is_causal) in enumerate([(None, False), (None, True),
                                               (Mask("tensor", "bool_dead", ("Sq", "Skv")), False),
                                               (Mask("torch_causal", variant="lower_right"), False),
                                               (Mask("tensor_bias", "float_q", ("Sq", "Skv")), False)]):
            for seq_q, seq_kv in ((17, 113), (113, 17))[i % 2:][:1]:
                add("extra/rank2", (seq_q, 8), (seq_kv, 8), (seq_kv, 17), dtype, mask=mask, is_causal=is_causal)
                add("extra/kv_batch_broadcast", (2, 3, seq_q, 8), (1, 3, seq_kv, 8), (1, 3, seq_kv, 8), dtype,
                    mask=mask, is_causal=is_causal)
                add("extra/kv_head_broadcast", (2, 3, seq_q, 8), (2, 1, seq_kv, 8), (2, 1, seq_kv, 8), dtype,
                    mask=mask, is_causal=is_causal)
                add("extra/kv_lower_rank", (2, 3, seq_q, 8), (3, seq_kv, 8), (3, seq_kv, 8), dtype,
                    mask=mask, is_causal=is_causal)
                add("extra/transposed", (2, 3, seq_q, 64), (2, 3, seq_kv, 64), (2, 3, seq_kv, 64), dtype,
                    mask=mask, is_causal=is_causal, layout="transposed")
    return cases


# ------------------------------------------------------------------------------------------ reports

def cause_of(difference: str) -> str:
    """A short key grouping differences by what differed (numbers and shapes stripped)."""
    text = difference.split("]: ", 1)[-1] if "]: " in difference else difference
    text = re.sub(r"\(.*?\)", "()", text.split(": ", 1)[-1] if text.startswith("[") else text)
    text = re.sub(r"\d[\d.e+-]*", "#", text)
    return text[:150]


def summarize(differences: list[str], per_cause: int = 1) -> str:
    """Differences grouped by cause, with counts and examples, then the full list."""
    groups: dict[str, list[str]] = {}
    for d in differences:
        groups.setdefault(cause_of(d), []).append(d)
    lines = [f"{len(differences)} differences between torch and sdpa_core, {len(groups)} causes:"]
    for cause, items in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"  [{len(items)}x] {cause}")
        lines.extend(f"      e.g. {x}" for x in items[:per_cause])
    lines.append("")
    lines.append("All differences:")
    lines.extend(differences)
    return "\n".join(lines)


def run_all(cases: list[Case]) -> Outcome:
    total = Outcome()
    for case in cases:
        found = run_case(case)
        total.differences += found.differences
        total.torch_bugs += found.torch_bugs
    return total
