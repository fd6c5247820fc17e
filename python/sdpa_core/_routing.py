"""Where ``dispatch_policy("auto")`` hands a call that an sdpa_core kernel covers to PyTorch instead.

The product rule: no call through sdpa_core may be slower than the ``torch.nn.functional`` call it
replaces. Until sdpa_core's Hopper kernels exist, torch has the faster kernel for some requests; those
are listed here with the measurement behind each (benchmarks/results.md, H100, 2026-11-25/26):
  * sm90, no bias or upper-left causal: torch's default (cuDNN) runs ~1.7x our sm80-class kernel
    (d128 S8k causal 552 vs 326 TFLOP/s);
  * sm90, a dense bias without a causal mask: torch's default (cuDNN) 277-307 vs ours 247-255;
  * any GPU, no additive bias and too few query tiles to fill the GPU (decode): torch's flash kernel splits
    the key range across blocks, ours does not yet (B=8 Sq=1 Skv=8k: 2453 vs 673 GB/s).
Everything else (ALiBi, lower-right causal prefill, dense bias + causal) stays on sdpa_core's kernels,
which are at or ahead of torch there.
"""

from __future__ import annotations

import torch

from . import policy

_BLOCK_M = 128  # query rows per block of the sm80 kernel: the unit "query tiles" counts in
_device_info: dict[int, tuple[int, int]] = {}


def _info(device: torch.device) -> tuple[int, int]:
    """(compute capability major, SM count), cached per device: the query costs microseconds."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    info = _device_info.get(index)
    if info is None:
        props = torch.cuda.get_device_properties(index)
        info = _device_info[index] = (props.major, props.multi_processor_count)
    return info


def torch_is_faster(query, bias) -> str:
    """Why torch's kernel should run this fused-eligible call, or "" when sdpa_core's should."""
    if policy.current() != "auto":
        return ""
    major, sms = _info(query.device)
    kind, causal = int(bias.kind), int(bias.causal or 0)
    if kind == 0 and causal in (0, 1) and major == 9:
        return "dispatch_policy 'auto': on sm90 torch's own fused kernel (cuDNN) is faster for this request"
    if kind == 2 and causal == 0 and major == 9:
        return "dispatch_policy 'auto': on sm90 torch's cuDNN kernel is faster for a dense bias without causal"
    if kind == 0:
        batch, heads, seq_q = query.shape[0], query.shape[1], query.shape[2]
        if batch * heads * -(-seq_q // _BLOCK_M) < sms:
            return ("dispatch_policy 'auto': too few query tiles to fill the GPU (decode-shaped); torch's flash "
                    "kernel splits the key range, sdpa_core's split-KV kernel is not built yet")
    return ""
