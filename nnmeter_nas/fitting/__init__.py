"""Kernel-level latency predictors fitted from whole-network measurements.

The one place that fits or refines a device package from network-level measurements of any
source (kernel-level measurement and fitting stay in :mod:`nnmeter_nas.builder`):

- :mod:`.device_fit`: :class:`~.device_fit.DeviceLatencyFit`, kernel cost models
  (:class:`~nnmeter_nas.regressors.KernelCostModel`) of one device from
  :class:`~.device_fit.NetworkSample` s of native sources and of other runtimes on the same
  hardware (fitted factors); terms in :mod:`.cost_terms`.
- :mod:`.sources`: NAS-Bench-201, nn-Meter's reference networks and the Pixel 4 data as samples
  (kernel configurations of ImageNet networks cached by :mod:`.network_configs`).
- :mod:`.builtin`: what the built-in packages of nn-Meter's four devices are fitted on and
  with which settings, one code path for ``benchmarks/four_devices.py`` and
  :func:`~.device_package.fit_device_package` (leave-one-out leaves a network out of a donor
  device's rows too).
- :mod:`.device_package`: :func:`~.device_package.write_device_package` and the one-call
  :func:`~.device_package.fit_device_package` (``nnmeter-nas predictors fit``); method and
  figures in ``docs/four_devices.md``, ``benchmarks/four_devices.py``.

The NAS-Bench-201-only fit of the first built-in packages (``nb201-1``):

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
from .device_fit import DeviceLatencyFit, NetworkSample
from .device_package import fit_device_package
from .metrics import accuracy_report

__all__ = ["AdditiveLatencyModel", "ConfigTable", "kernel_configs", "accuracy_report",
           "DeviceLatencyFit", "NetworkSample", "fit_device_package"]
