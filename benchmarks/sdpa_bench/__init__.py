"""Side-by-side attention benchmark: sdpa_core next to PyTorch's own kernels and FlexAttention.

    python -m benchmarks.sdpa_bench [--cases NAME,...] [--modes fwd,fwd+bwd] [--quick] [--md PATH] [--png PATH]

Run from the repository root with sdpa_core installed (or PYTHONPATH=python). One module per concern:

- ``cases``: the shapes and masks of the team's ANCHORS.md, FLOP counts, inputs, materialized masks;
- ``contenders``: how each column (sdpa_core auto / own, torch default / flash / cuDNN / efficient,
  FlexAttention) is called for a case, and sdpa_core.explain's chosen path;
- ``timing``: one contender on one case and mode, timed (median of triton.testing.do_bench) or refused;
- ``summary``: the ratio targets, PASS / MISS;
- ``report``: Markdown tables, footnotes, bar chart;
- ``extras``: host cost per call and peak memory of sdpa_core;
- ``__main__``: the command line.

See benchmarks/README.md for the method.
"""
