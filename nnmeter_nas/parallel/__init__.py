"""Parallel scoring of search-space candidates on many devices, with Ray.

::

    from nnmeter_nas.parallel import score
    df = score("spos", n=100_000, devices="all", out="scores.parquet")            # table mode
    df = score("spos", n=200, devices=["dummy"], mode="full", address="auto")    # full mode

See :func:`~nnmeter_nas.parallel.api.score`. Importing this package imports neither torch, NNI
nor Ray.
"""
from __future__ import annotations

from .._lazy import lazy_exports

_LAZY = {
    "score": "api",
    "resolve_devices": "api",
    "latency_column": "api",
    "ScoringPlan": "api",
    "LabelSpace": "codes",
    "CodeTable": "lookup",
    "SpaceSpec": "spaces",
    "resolve_space": "spaces",
    "BUILTIN_SPACES": "spaces",
    "ResultStore": "store",
    "ResumeError": "store",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
