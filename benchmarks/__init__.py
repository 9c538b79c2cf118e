"""Benchmark suite: ``python -m benchmarks --data PATH`` (see ``python -m benchmarks --help``).

Measures this project next to the original design (``--encoder baseline``) in one run and prints
one table: recommendation quality, encoder size and speed, query latency, startup and memory,
and index scaling to 1M vectors. Not part of the test suite: nothing here asserts a timing.
"""
