"""Kernel-level latency predictors fitted from whole-network measurements.

- :mod:`.configs`: a network as a multiset of kernel configurations (regressor + features).
- :mod:`.cost_basis`: the shared physical cost model (launch, MACs, memory) used as prior.
- :mod:`.additive`: :class:`AdditiveLatencyModel`, network latency = overhead + sum of kernels.
- :mod:`.lookup_tree`: per-kernel regression trees (:class:`~nnmeter_nas.regressors.TreeEnsemble`)
  from a fitted configuration table.
- :mod:`.metrics`: share within +-10 % / +-5 %, RMSPE, Kendall tau.
- :mod:`.nb201_graphs`, :mod:`.nb201_devices`, :mod:`.nb201_package`: the NAS-Bench-201 data of
  nn-Meter's four devices -> built-in predictor packages
  (``benchmarks/fit_nb201_predictors.py``; method in ``docs/nb201_predictors.md``).

Nothing here is imported by ``import nnmeter_nas``; scipy and scikit-learn are imported only
when fitting.
"""
from __future__ import annotations

from .additive import AdditiveLatencyModel
from .configs import ConfigTable, kernel_configs
from .metrics import accuracy_report

__all__ = ["AdditiveLatencyModel", "ConfigTable", "kernel_configs", "accuracy_report"]
