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

__all__ = ["BuildConfig", "BuildResult", "Builder", "build_predictor", "build_two_regimes",
           "reuse_measurements"]


def __getattr__(name: str):
    if name == "build_two_regimes":
        from . import cache_fit

        return cache_fit.build_two_regimes
    if name in __all__:
        from . import build

        return getattr(build, name)
    raise AttributeError(f"module 'nnmeter_nas.builder' has no attribute {name!r}")
