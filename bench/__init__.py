"""Benchmarks: each module has run(...) -> dict[str, float] and prints its figures."""
