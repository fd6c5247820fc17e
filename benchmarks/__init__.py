"""Benchmarks of sdpa_core. A regular package, so that `python -m benchmarks.sdpa_bench` run from the
repository root finds this folder even where some installed distribution ships a `benchmarks` package."""
