"""Exceptions sdpa_core raises for bad arguments.

PyTorch's SDPA raises ``RuntimeError`` for what it rejects, so code written against it catches that. Ours
are also ``ValueError`` / ``TypeError``, which is what the argument problem is: both ``except
RuntimeError`` and ``except ValueError`` (or ``TypeError``) keep working.
"""

from __future__ import annotations


class SdpaValueError(ValueError, RuntimeError):
    """An argument has the right type but a wrong value or shape; the message names it."""


class SdpaTypeError(TypeError, RuntimeError):
    """An argument has the wrong type or dtype; the message names it."""
