"""``dispatch_policy``: whether sdpa_core may hand a call to a faster PyTorch kernel.

``"auto"`` (the default) takes the fastest path sdpa_core knows for each call, which on some GPUs is one
of PyTorch's own fused kernels for the same request (``_routing.py`` lists the measured cases).
``"own"`` pins every call that one of sdpa_core's kernels covers to that kernel, training calls included
(the fused forward and backward): for benchmarks, and for users who want numerics that do not depend on
torch's backend choice. Calls no sdpa_core kernel covers
run through PyTorch under either policy (``explain()`` says so).

The policy is process-wide, a plain module global rather than thread-local state, so that
``torch.compile`` reads it as a constant and guards on it (changing it recompiles).
"""

from __future__ import annotations

from .errors import SdpaValueError

POLICIES = ("auto", "own")

_policy = ["auto"]


def current() -> str:
    """The policy in force."""
    return _policy[0]


class dispatch_policy:
    """Set the dispatch policy: ``"auto"`` or ``"own"``.

    As a context manager it applies inside the ``with`` block and restores the previous policy on exit::

        with sdpa_core.dispatch_policy("own"):
            out = sdpa_core.scaled_dot_product_attention(q, k, v, is_causal=True)

    As a plain call, ``sdpa_core.dispatch_policy("own")``, it sets the policy until the next change.
    The policy applies to the whole process (all threads).

    Args:
        policy: ``"auto"`` (the fastest known path, which may be a PyTorch kernel) or ``"own"``
            (sdpa_core's kernels wherever one covers the call).

    Raises:
        SdpaValueError: ``policy`` is not one of ``"auto"``, ``"own"``.
    """

    def __init__(self, policy: str):
        if policy not in POLICIES:
            raise SdpaValueError(f"dispatch_policy: policy must be one of {POLICIES}; got {policy!r}")
        self.policy = policy
        self._previous = _policy[0]
        _policy[0] = policy  # the plain-call form takes effect at once; a with block restores on exit

    def __enter__(self) -> "dispatch_policy":
        return self

    def __exit__(self, *exc) -> None:
        _policy[0] = self._previous

    def __repr__(self) -> str:
        return f"dispatch_policy({self.policy!r})"
