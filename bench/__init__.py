"""Benchmarks: run as modules, e.g. `python -m bench.client_overhead`."""
