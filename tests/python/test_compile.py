"""torch.compile(fullgraph=True) of a module using each built-in bias: no graph break, same result as eager."""

import pytest
import torch
from conftest import DEVICES, qkv

import sdpa_core
from sdpa_core import CausalVariant


class Attention(torch.nn.Module):
    def __init__(self, make_bias, is_causal=False):
        super().__init__()
        self.make_bias = make_bias
        self.is_causal = is_causal

    def forward(self, q, k, v, slopes, dense):
        bias = self.make_bias(q.shape[2], k.shape[2], slopes, dense)
        return sdpa_core.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=self.is_causal) * 2


MODULES = {
    "none": (lambda sq, skv, s, d: None, False),
    "is_causal": (lambda sq, skv, s, d: None, True),
    "causal_upper_left": (lambda sq, skv, s, d: sdpa_core.causal_upper_left(sq, skv), False),
    "causal_lower_right": (lambda sq, skv, s, d: sdpa_core.causal_lower_right(sq, skv), False),
    "alibi_lower_right": (lambda sq, skv, s, d: sdpa_core.AlibiBias(s, sq, skv, causal=CausalVariant.LOWER_RIGHT),
                          False),
    "alibi_is_causal": (lambda sq, skv, s, d: sdpa_core.AlibiBias(s, sq, skv), True),
    "tensor_bias": (lambda sq, skv, s, d: sdpa_core.TensorBias(d), False),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(MODULES))
def test_compiled_module_matches_eager(device, name):
    torch._dynamo.reset()
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    q, k, v = qkv(2, 4, 4, 33, 47, 64, device, dtype)
    slopes = sdpa_core.alibi_slopes(4, device=device)
    dense = torch.randn(1, 4, 33, 47, device=device).to(dtype)
    module = Attention(*MODULES[name])
    # aot_eager on CPU keeps CI free of a C++ toolchain run; fullgraph=True fails on any graph break.
    backend = "aot_eager" if device == "cpu" else "inductor"
    compiled = torch.compile(module, fullgraph=True, backend=backend)
    expected = module(q, k, v, slopes, dense)
    torch.testing.assert_close(compiled(q, k, v, slopes, dense), expected, atol=2e-2, rtol=0)


def test_custom_op_passes_opcheck_and_matches_torch():
    """The torch.library op that compiled graphs call: its fake impl, schema and eager body agree
    (opcheck), and its body gives torch's answer when no kernel runs (CPU)."""
    from sdpa_core import _ops

    q, k, v = qkv(1, 2, 2, 9, 13, 64)
    args = (q, k, v, 0, int(CausalVariant.UPPER_LEFT), None, None, 0.125, False)
    torch.library.opcheck(_ops.attention_fwd, args)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.125)
    torch.testing.assert_close(_ops.attention_fwd(*args), expected)


def test_python_modules_import_one_way():
    """The custom op and the kernel layer never import the dispatcher (no import cycle)."""
    import ast
    import pathlib

    package = pathlib.Path(sdpa_core.__file__).parent
    for name in ("_ops.py", "_kernels.py", "_fallback.py", "_kernel_bias.py", "_routing.py", "_autograd.py", "_math.py",
                 "_compiled.py"):
        tree = ast.parse((package / name).read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                    for alias in node.names} | {node.module for node in ast.walk(tree)
                                                if isinstance(node, ast.ImportFrom) and node.module}
        assert "_dispatch" not in imported, f"{name} imports _dispatch"
