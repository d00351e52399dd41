"""Latency-aware search strategies for NNI 3 (use them as the ``strategy`` of a ``NasExperiment``).

- :class:`ConstrainedEvolution`: regularized evolution that never trains an architecture over
  budget, with latency-aware mutation; ``reward=MnasNetReward(...)`` turns the budgets into
  MnasNet's soft constraint.
- :class:`MultiObjectiveEvolution`: NSGA-II over accuracy and latency on one or more devices;
  ``export_pareto_front()``.
- :class:`ConstrainedRandom`: random search within the budgets (the baseline).
- :class:`MnasNetReward`, Pareto utilities (:mod:`.pareto`). Tabular evaluation and the
  experiment runner are NNI adapters (:mod:`nnmeter_nas.nni.tabular`,
  :mod:`nnmeter_nas.nni.experiment`), re-exported here under their old names.

Each takes a latency source: any callable ``sample -> {device: ms}`` (lookup table,
``LatencyProfiler``, function), budgets ``{device: max_ms}`` and a seed. Names are exported lazily:
importing this package does not import NNI.
"""
from __future__ import annotations

from .._lazy import lazy_exports

_LAZY = {
    "ConstrainedEvolution": "evolution",
    "MultiObjectiveEvolution": "nsga2",
    "ConstrainedRandom": "random_search",
    "MnasNetReward": "rewards",
    "LatencyAwareStrategy": "_base",
    "InfeasibleBudgetError": "_base",
    "LatencySourceError": "_base",
    "Trial": "_base",
    "TabularEvaluator": "tabular",
    "NB201Lookup": "tabular",
    "run_sequential_experiment": "tabular",
    "hypervolume_2d": "pareto",
    "non_dominated_sort": "pareto",
    "pareto_mask": "pareto",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
