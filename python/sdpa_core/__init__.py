"""sdpa_core: scaled dot-product attention whose masks and biases are objects, run by fused kernels that
never materialize them. See README.md; the API follows PyTorch RFC #110681.
"""

from .bias import (AlibiBias, AttnBias, CausalBias, TensorBias, alibi_slopes, causal_lower_right,
                   causal_upper_left)
from .errors import SdpaTypeError, SdpaValueError
from .explain import explain
from .functional import scaled_dot_product_attention
from .kv_cache import kv_cache_append
from .policy import dispatch_policy
from .variants import CausalVariant
from .varlen import explain_varlen, varlen_attn

__version__ = "0.1.0"

__all__ = [
    "AttnBias",
    "TensorBias",
    "CausalBias",
    "CausalVariant",
    "AlibiBias",
    "causal_upper_left",
    "causal_lower_right",
    "alibi_slopes",
    "scaled_dot_product_attention",
    "varlen_attn",
    "explain_varlen",
    "kv_cache_append",
    "explain",
    "dispatch_policy",
    "SdpaValueError",
    "SdpaTypeError",
    "__version__",
]
