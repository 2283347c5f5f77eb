"""Benchmarks: end-to-end latency per backend (the kernel benchmarks live in amanet.ops)."""
