"""Build latency predictors for a device you have.

Measure kernels with a backend (:mod:`~nnmeter_nas.builder.backends`), detect the device's
fusion rules (:mod:`~nnmeter_nas.builder.fusion`), sample kernel configurations
(:mod:`~nnmeter_nas.builder.kernel_specs`), store measurements resumably
(:mod:`~nnmeter_nas.builder.store`), fit one regressor per kernel type
(:mod:`~nnmeter_nas.builder.fitting`) and write a package (:mod:`~nnmeter_nas.builder.build`).
On CPUs, build twice (warm and cold caches) and fit how networks mix the two
(:mod:`~nnmeter_nas.builder.cache_fit`).

    >>> from nnmeter_nas.builder import BuildConfig, build_predictor, build_two_regimes
    >>> build_predictor(BuildConfig(name="mycpu", work_dir="mycpu-build", output="mycpu"))
    >>> build_two_regimes(BuildConfig(name="mycpu", work_dir="mycpu-build", output="mycpu"))

Importing this package is light; torch and onnxruntime are imported when used.
"""
from __future__ import annotations

from .._lazy import lazy_exports

_LAZY = {
    "BuildConfig": "build",
    "BuildResult": "build",
    "Builder": "build",
    "build_predictor": "build",
    "reuse_measurements": "build",
    "build_two_regimes": "cache_fit",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
