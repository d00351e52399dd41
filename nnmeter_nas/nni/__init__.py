"""NNI 3 integration: latency lookup tables over model spaces, a latency filter, latency losses.

- :class:`LatencyProfiler` (an ``nni.nas.profiler.Profiler``) and :class:`LatencyTable`;
  :class:`DirectLatencyProfiler` for spaces a table cannot describe
- :class:`LatencyFilter` (NNI middleware, ``RandomOneShot(filter=...)``, plain callable)
- :class:`ExpectedLatency` and :class:`LatencyPenalty` (``penalty=`` of DARTS/Proxyless/GumbelDARTS)
- :func:`find_choice_points`, :func:`build_latency_table`
- :class:`TabularEvaluator`, :class:`NB201Lookup` (metrics looked up instead of trained) and
  :func:`run_sequential_experiment` (NNI's sequential engine with a budget of architectures)
- :func:`train_supernet`, :func:`recalibrate_batchnorm`, :func:`inherited_accuracy`,
  :func:`keep_fixed_operations`, :func:`shared_subnet`, :class:`SharedWeightsSpace`: SPOS weight
  sharing (train the supernet once with NNI's ``RandomOneShot``, score subnets with inherited
  weights)

Names are imported lazily; using any of them imports torch and NNI.
"""
from __future__ import annotations

from .._lazy import lazy_exports

_LAZY = {
    "LatencyProfiler": "profiler",
    "DirectLatencyProfiler": "profiler",
    "LatencyTable": "table",
    "TablePoint": "table",
    "LatencyFilter": "filter",
    "ExpectedLatency": "expected_latency",
    "architecture_probabilities": "expected_latency",
    "LatencyPenalty": "penalty",
    "PENALTY_FORMS": "penalty",
    "find_choice_points": "choice_points",
    "covering_samples": "choice_points",
    "SpaceFreezer": "choice_points",
    "ChoicePoint": "choice_points",
    "build_latency_table": "table_builder",
    "TabularEvaluator": "tabular",
    "NB201Lookup": "tabular",
    "run_sequential_experiment": "experiment",
    "evaluated_models": "experiment",
    "nni_home": "experiment",
    "train_supernet": "supernet",
    "recalibrate_batchnorm": "supernet",
    "inherited_accuracy": "supernet",
    "keep_fixed_operations": "supernet",
    "shared_subnet": "supernet",
    "SharedWeightsSpace": "supernet",
    "UnsupportedSpaceError": "errors",
    "SampleError": "errors",
    "TableMismatchError": "errors",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
