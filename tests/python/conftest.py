import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

HAS_CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (runs on the device machine)")

DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def randn(*shape, device="cpu", dtype=torch.float32):
    """Random normal inputs (never zeros: they hide unwritten outputs and indexing bugs)."""
    return torch.randn(*shape, device=device, dtype=torch.float32).to(dtype)


def qkv(batch, heads_q, heads_kv, seq_q, seq_kv, dim, device="cpu", dtype=torch.float32):
    return (randn(batch, heads_q, seq_q, dim, device=device, dtype=dtype),
            randn(batch, heads_kv, seq_kv, dim, device=device, dtype=dtype),
            randn(batch, heads_kv, seq_kv, dim, device=device, dtype=dtype))
