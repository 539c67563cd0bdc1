"""Benchmarks: each prints a table and writes bench/results/NAME.json; run as python -m bench.NAME."""
