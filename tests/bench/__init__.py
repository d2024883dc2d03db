"""Benchmarks (``just bench``): figures are written to ``bench-results/``, never asserted."""
