"""Adapters that let other libraries call sdpa_core. Each lives in its own module and imports its library
there, so ``import sdpa_core`` never pulls an optional dependency in (``sdpa_core.integrations.transformers``
needs ``pip install sdpa_core[transformers]``)."""
