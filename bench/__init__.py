"""Benchmarks of the journey pipeline: ``make bench`` (``python -m bench.run``).

Results go to ``bench/results/latest.json`` and ``bench/results/latest.md``.
"""
