"""Benchmark scripts; run them from the repository root (see BENCHMARKS.md)."""
