"""Benchmarks (never tests): run as modules, e.g. `python -m bench.engine`."""

__all__: list[str] = []
