"""``full`` scoring: freeze each candidate, read it once and predict it kernel by kernel.

One graph per candidate (the torch front end's shape-only pass, which also counts its FLOPs
and parameters: :func:`~nnmeter_nas.parallel.costs.graph_and_costs`) serves every device
(each predictor splits it into kernels by its own fusion rules). :class:`FullScorer` holds the
space and the predictors, so a Ray actor builds it once and then scores chunk after chunk.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from ..predictor import gc_paused
from .codes import LabelSpace
from .spaces import SpaceSpec, freeze_function

__all__ = ["FullScorer", "kernels_json"]


def kernels_json(breakdown: Any) -> str:
    """A kernel breakdown as compact JSON: ``[[name, kernel type, ms, status], ...]``."""
    return json.dumps([[k.name, k.kernel_type, round(float(k.latency_ms), 9), k.status]
                       for k in breakdown], separators=(",", ":"))


class FullScorer:
    """Scores candidates (integer codes of ``space``) on every predictor's device.

    Parameters
    ----------
    spec:
        The search space and its NCHW input shape.
    predictors:
        Loaded :class:`~nnmeter_nas.predictor.LatencyPredictor` objects (distinct devices).
    label_space:
        Labels and values (defaults to those of the space's choice points).
    kernels:
        Also return each candidate's kernel breakdown per device (JSON strings).
    """

    def __init__(self, spec: SpaceSpec, predictors: Sequence[Any], *,
                 label_space: LabelSpace | None = None, kernels: bool = False) -> None:
        import warnings

        self.spec = spec
        self.predictors = list(predictors)
        self.kernels = kernels
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # NNI's torch-version notice
            self.space = spec.build()
        if label_space is None:
            from ..nni.choice_points import find_choice_points

            label_space = LabelSpace.from_label_values(
                find_choice_points(self.space).label_values)
        self.label_space = label_space
        self._freeze = freeze_function(self.space)

    @property
    def devices(self) -> list[str]:
        return [p.device for p in self.predictors]

    def score_codes(self, codes: np.ndarray) -> dict[str, Any]:
        """``{"flops": (n,), "params": (n,), device: (n,) ms, ...}`` and, with ``kernels``,
        ``"kernels:" + device`` lists of JSON breakdowns."""
        from ..nni.torch_threads import torch_threads
        from .costs import graph_and_costs

        samples = self.label_space.decode(np.asarray(codes))
        shape = self.spec.input_shape
        graphs, costs = [], []
        with torch_threads(1):
            for sample in samples:
                # one shape-only forward pass gives the graph and the FLOPs/params; the
                # collector is paused per candidate, so what it defers stays one network's
                with gc_paused():
                    graph, flops, params = graph_and_costs(self._freeze(sample), shape)
                graphs.append(graph)
                costs.append((flops, params))
        cost = np.asarray(costs, dtype=np.float64).reshape(-1, 2)
        out: dict[str, Any] = {"flops": cost[:, 0], "params": cost[:, 1]}
        shared: dict = {}  # devices with equal fusion rules share kernel detection
        with gc_paused():  # graphs, kernels and features are kept: little cyclic garbage
            self._predict(graphs, shared, out)
        return out

    def _predict(self, graphs: list, shared: dict, out: dict[str, Any]) -> None:
        for pred in self.predictors:
            if self.kernels:
                bds = [pred.predict_kernels(g) for g in graphs]
                out[pred.device] = np.array([bd.latency_ms for bd in bds], dtype=np.float64)
                out["kernels:" + pred.device] = [kernels_json(bd) for bd in bds]
            else:
                # One regressor call per kernel type for the whole chunk.
                out[pred.device] = np.asarray(pred.predict_many(graphs, shared=shared),
                                              dtype=np.float64)
