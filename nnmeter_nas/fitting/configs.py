"""Kernel configurations of networks: what an additive latency model is fitted over.

A *configuration* is a pair ``(regressor, features)``: the engine's regressor name for a kernel
(:func:`nnmeter_nas.features.regressor_name`) and its feature vector (a tuple of floats, in the
units of :data:`nnmeter_nas.features.FEATURE_NAMES`). Two kernels with the same configuration get
the same predicted latency from any package, so a network is, for the predictor, a multiset of
configurations: ``latency(net) = sum(count[c] * latency[c]) (+ overhead)``.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ..features.extract import extract_features, regressor_name
from ..graph import OpGraph
from ..kernels.detector import detect_kernels
from ..kernels.fusion_rules import FusionRules

Config = tuple[str, tuple[float, ...]]


def kernel_configs(graph: OpGraph, rules: FusionRules, *,
                   feature_set: str = "nnmeter-nas-1") -> Counter:
    """``Counter`` of the configurations of ``graph``'s kernels under ``rules``.

    Raises ``ValueError`` naming the kernel when a kernel has no feature vector (the engine
    could not predict it either).
    """
    out: Counter = Counter()
    for k in detect_kernels(graph, rules):
        feats = extract_features(k, feature_set)
        if feats is None:
            raise ValueError(f"kernel {k.name} (type {k.type!r}, nodes {k.nodes[:3]}) of graph "
                             f"{graph.name!r} has no feature vector in feature set "
                             f"{feature_set!r}; no regressor could predict it")
        out[(regressor_name(k.type), tuple(float(f) for f in feats))] += 1
    return out


@dataclass
class ConfigTable:
    """Configurations of a set of networks as a count matrix.

    ``configs[j]`` is configuration ``j``; ``counts[i, j]`` how often network ``i`` holds it
    (float64, shape ``(n_networks, n_configs)``).
    """

    configs: list[Config]
    counts: np.ndarray

    @classmethod
    def from_counters(cls, counters: Sequence[Counter],
                      configs: Sequence[Config] | None = None) -> "ConfigTable":
        """Build the matrix; with ``configs`` given, columns follow it and configurations not
        in it raise ``KeyError`` (use :meth:`unseen` first to check)."""
        if configs is None:
            configs = sorted({c for cnt in counters for c in cnt})
        index = {c: j for j, c in enumerate(configs)}
        counts = np.zeros((len(counters), len(configs)))
        for i, cnt in enumerate(counters):
            for c, n in cnt.items():
                counts[i, index[c]] += n
        return cls(list(configs), counts)

    @staticmethod
    def unseen(counters: Iterable[Counter], configs: Sequence[Config]) -> set[Config]:
        known = set(configs)
        return {c for cnt in counters for c in cnt if c not in known}

    def regressors(self) -> list[str]:
        return sorted({r for r, _ in self.configs})

    def columns_of(self, regressor: str) -> np.ndarray:
        return np.array([j for j, (r, _) in enumerate(self.configs) if r == regressor], dtype=int)
