"""Tabular evaluation: metrics looked up from a table instead of trained, inside NNI's machinery.

- :class:`TabularEvaluator`: an NNI evaluator that reports a metric looked up from the sample
  (e.g. NAS-Bench-201 accuracy) instead of training; it runs in NNI's sequential engine like any
  evaluator, reporting through ``nni.report_final_result``.
- :class:`NB201Lookup`: NAS-Bench-201 accuracy and measured latency as callables over samples of
  :class:`~nnmeter_nas.search_spaces.nasbench201.NasBench201Space`.

Run an experiment with them with :func:`nnmeter_nas.nni.experiment.run_sequential_experiment`.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import nni
from nni.nas.evaluator import Evaluator

from ..datasets.nb201 import NB201Table, format_arch_str, parse_arch_str
from ..errors import LatencySourceError
from ..search_spaces.nasbench201 import sample_to_ops

__all__ = ["TabularEvaluator", "NB201Lookup"]


class TabularEvaluator(Evaluator):
    """Evaluator that reports ``metric_fn(sample)`` as the trial's final metric.

    Parameters
    ----------
    metric_fn : callable
        ``sample dict -> float`` (e.g. the tabular accuracy of the architecture).
    instantiate : bool, default=False
        Also build the network (``model.executable_model()``) before looking the metric up, as a
        training evaluator would. Off by default: building costs time on every trial and the
        metric does not depend on it.
    """

    def __init__(self, metric_fn: Callable[[dict], float], *, instantiate: bool = False) -> None:
        if not callable(metric_fn):
            raise TypeError(f"metric_fn must be callable sample -> float, got {type(metric_fn).__name__}")
        self.metric_fn = metric_fn
        self.instantiate = instantiate

    def extra_repr(self) -> str:
        return f"{self.metric_fn!r}, instantiate={self.instantiate}"

    # NNI calls _execute(executable model space); overriding it is NNI's documented way to skip
    # building the network. evaluate() serves callers that pass an instantiated model.
    def _execute(self, model: Any) -> float:
        if self.instantiate:
            model.executable_model()
        return self._report(model.sample)

    def evaluate(self, model: Any) -> float:
        current = nni.get_current_parameter()
        if current is None or getattr(current, "sample", None) is None:
            raise RuntimeError("TabularEvaluator.evaluate needs NNI's trial context (run it in a NasExperiment "
                               "or under Evaluator.mock_runtime(frozen_model)) to know the sample")
        return self._report(current.sample)

    def _report(self, sample: Mapping[str, Any]) -> float:
        value = float(self.metric_fn(dict(sample)))
        nni.report_final_result(value)
        return value


class NB201Lookup:
    """NAS-Bench-201 table lookups over :class:`NasBench201Space` samples.

    ``accuracy(sample)`` -> CIFAR-10 accuracy (%); ``latency(sample)`` (also ``__call__``) ->
    ``{device: ms}`` of the devices measured for that cell (a device missing from the table is
    missing from the dict, which the strategies report as an error).
    """

    def __init__(self, table: NB201Table, devices: Sequence[str] | None = None) -> None:
        self.table = table
        self.devices = tuple(table.devices if devices is None else devices)
        for d in self.devices:
            if d not in table.devices:
                raise LatencySourceError(f"device {d!r} has no measured latency; the table has "
                                         f"{list(table.devices)}")
        # ops tuple -> (accuracy, {device: ms}); lookups run for every sample a strategy looks at
        self._rows = {}
        for arch in table.archs:
            lat = table.latencies(arch.index)
            self._rows[parse_arch_str(arch.arch_str)] = (arch.cifar10_acc,
                                                         {d: lat[d] for d in self.devices if d in lat})

    def _row(self, sample: Mapping[str, Any]) -> tuple[float, dict[str, float]]:
        ops = sample_to_ops(sample)
        row = self._rows.get(ops)
        if row is None:
            self.table.arch(format_arch_str(ops))  # raises ArchStrError naming the cell
        return row

    def accuracy(self, sample: Mapping[str, Any]) -> float:
        return self._row(sample)[0]

    def latency(self, sample: Mapping[str, Any]) -> dict[str, float]:
        return dict(self._row(sample)[1])

    __call__ = latency

    def __repr__(self) -> str:
        return f"NB201Lookup(devices={list(self.devices)})"
