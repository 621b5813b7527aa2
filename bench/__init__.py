"""The benchmark suite: ``python -m bench`` runs every workload of the performance targets in one command.

The package holds the one-command harness (:mod:`bench.__main__`, :mod:`bench.runner`) and its parts; the
older single-purpose scripts (``bench/load_1to1.py``, ``bench/faults.py``, ...) still run on their own and
share :mod:`bench._common` with it. See docs/performance.md.
"""

__all__: list[str] = []
