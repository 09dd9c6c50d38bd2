"""Experiments: the run's configuration, training, one resumable run, sweeps, and their results.

``config`` (``RunConfig``), ``training`` (an epoch, evaluation, the BatchNorm refresh),
``runner`` (``run``: warm-up, score, prune, train, test), ``sweeps`` (grids of runs on Ray),
``results`` (tables, the paper's numbers, orderings), ``statistics`` (intervals, paired
differences). Files are named and written by :mod:`fts_core.io`.
"""
