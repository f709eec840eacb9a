"""Benchmarks (run as modules from the repository root: python -m bench.bench_cfg); numbers go to docs/BENCHMARKS.md."""
