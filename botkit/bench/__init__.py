"""Benchmarks that ship with botkit (``botkit bench ...``).

They follow ``BENCHMARKS.md``: every figure is a ratio measured side by side in one run
against a named baseline, with the machine, dtype and versions printed beside it.
Nothing here is imported by the serving path; importing :mod:`botkit.bench.serve`
does not import torch (the CLI builds its parser from it).
"""
