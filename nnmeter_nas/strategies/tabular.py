"""Former home of tabular evaluation and the experiment runner, which are not strategies.

They live in :mod:`nnmeter_nas.nni.tabular` (``TabularEvaluator``, ``NB201Lookup``) and
:mod:`nnmeter_nas.nni.experiment` (``run_sequential_experiment``, ``evaluated_models``,
``nni_home``); this module re-exports them.
"""
from __future__ import annotations

from ..nni.experiment import evaluated_models, nni_home, run_sequential_experiment
from ..nni.tabular import NB201Lookup, TabularEvaluator

__all__ = ["TabularEvaluator", "NB201Lookup", "run_sequential_experiment", "evaluated_models",
           "nni_home"]
