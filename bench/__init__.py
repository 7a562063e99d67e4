"""Benchmarks of the semrec pipeline (run from the repository root: ``python -m bench.NAME``).

Results are printed and written as JSON under ``bench/out/`` (git-ignored).
"""
