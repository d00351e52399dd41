"""``LatencyProfiler``: an NNI 3 ``Profiler`` that returns predicted latency (ms) from a table.

Replaces NNI's ``NnMeterProfiler`` (which needs the old ``nn_meter`` package and ``onnxsim``)::

    from nnmeter_nas.nni import LatencyProfiler
    profiler = LatencyProfiler(space, "cortexA76cpu_tflite21", (1, 3, 224, 224))
    profiler.profile(sample)          # ms on that device, a dictionary lookup per choice point
    profiler.save("spos_a76.json")    # ship the table; LatencyProfiler.load(...) reads it back

Several devices share one graph traversal: ``LatencyProfiler(space, [p1, p2], shape)``;
``profile(sample)`` answers for the first, ``profile(sample, device)`` or
``profile_all(sample)`` for the others.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from nni.nas.profiler import Profiler

from .errors import TableMismatchError
from .table import LatencyTable

__all__ = ["LatencyProfiler", "DirectLatencyProfiler"]


def unwrap_model_space(model_space: Any) -> Any:
    """The PyTorch ``ModelSpace`` inside an NNI ``ExecutableModelSpace`` (or the object itself).

    ``RawFormatModelSpace`` (``model_format="raw"``) holds the space itself;
    ``SimplifiedModelSpace`` (NNI's default ``"simplified"`` format) keeps only a traced recipe of
    it, from which the space is built again (same labels and choices; fresh weights, which a
    latency table does not read).
    """
    if callable(getattr(model_space, "named_children", None)):
        return model_space
    inner = getattr(model_space, "model_space", None)
    if inner is not None:
        return inner
    recipe = getattr(model_space, "model", None)
    if recipe is not None and hasattr(recipe, "trace_symbol") and callable(
            getattr(recipe, "get", None)):
        return recipe.get()
    return model_space


def space_input_shape(model_space: Any, input_shape: Sequence[int] | None) -> list[int]:
    if input_shape is None:
        input_shape = getattr(model_space, "input_shape", None)
    if input_shape is None:
        from ..errors import SpaceSpecError

        raise SpaceSpecError(f"{type(model_space).__name__} does not say its input shape: pass "
                             "input_shape=(1, C, H, W)")
    return [int(d) for d in input_shape]


class LatencyProfiler(Profiler):
    """Predicted latency (ms) of samples of an NNI model space, from a lookup table.

    The table (:class:`LatencyTable`) is built once by predicting frozen networks of the
    space: the latency of each choice point under each of its values, plus the fixed part. A
    lookup then adds one entry per choice point, without building the network.

    Parameters
    ----------
    model_space : nni.nas.nn.pytorch.ModelSpace, default=None
        An NNI 3 PyTorch model space (or an ``ExecutableModelSpace`` wrapping one). May be None
        when ``table`` is given.
    predictor : LatencyPredictor, str or list, default=None
        A :class:`~nnmeter_nas.LatencyPredictor`, a predictor name (see
        :func:`~nnmeter_nas.load_predictor`), or a list of them for several devices.
    input_shape : tuple of int, default=None
        NCHW input shape, batch included; defaults to ``model_space.input_shape`` if it has one.
    table : LatencyTable, str or path, default=None
        A table or the path of a saved one, instead of building a new table. Checked against
        ``model_space`` and ``input_shape`` when they are given.
    max_combinations : int, default=256
        See :func:`~nnmeter_nas.nni.table_builder.build_latency_table`.
    progress : bool, default=False
        Show a progress bar while the table is built.
    fast_freeze : bool, default=True
        See :func:`~nnmeter_nas.nni.table_builder.build_latency_table`.
    allow_missing : bool, default=False
        See :func:`~nnmeter_nas.nni.table_builder.build_latency_table`: count kernels a
        predictor has no regressor for as 0 ms (with a warning) instead of raising
        :class:`~nnmeter_nas.errors.MissingRegressorError`.

    See Also
    --------
    DirectLatencyProfiler : Full prediction of every sample, for spaces a table cannot describe.
    LatencyFilter : Rejects samples over a latency budget, from a profiler.

    Examples
    --------
    >>> import torch.nn as nn
    >>> from nni.nas.nn.pytorch import LayerChoice, ModelSpace
    >>> from nnmeter_nas.nni import LatencyProfiler
    >>> class Space(ModelSpace):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.conv = LayerChoice({"k3": nn.Conv2d(3, 16, 3, padding=1),
    ...                                  "k5": nn.Conv2d(3, 16, 5, padding=2)}, label="conv")
    ...         self.relu = nn.ReLU()
    ...     def forward(self, x):
    ...         return self.relu(self.conv(x))
    >>> profiler = LatencyProfiler(Space(), "cortexA76cpu_tflite21", (1, 3, 32, 32))
    >>> profiler.devices
    ['cortexA76cpu_tflite21']
    >>> profiler.profile({"conv": "k3"}) < profiler.profile({"conv": "k5"})  # ms
    True
    """

    def __init__(self, model_space: Any = None, predictor: Any = None,
                 input_shape: Sequence[int] | None = None, *,
                 table: LatencyTable | str | Path | None = None, max_combinations: int = 256,
                 progress: bool = False, fast_freeze: bool = True,
                 allow_missing: bool = False) -> None:
        space = unwrap_model_space(model_space) if model_space is not None else None
        super().__init__(space)
        if table is not None:
            if not isinstance(table, LatencyTable):
                table = LatencyTable.load(table)
            if space is not None:
                from .choice_points import find_choice_points

                layout = find_choice_points(space, max_combinations=max_combinations)
                table.check_space(layout.signature(), input_shape)
            elif input_shape is not None:
                table.check_space(table.space, input_shape)
        else:
            if space is None or predictor is None:
                raise ValueError("LatencyProfiler needs a model space and a predictor (or a "
                                 "device/predictor name) to build a table, or table=...")
            from .table_builder import build_latency_table

            table = build_latency_table(space, predictor, space_input_shape(space, input_shape),
                                        max_combinations=max_combinations, progress=progress,
                                        fast_freeze=fast_freeze, allow_missing=allow_missing)
        self.table: LatencyTable = table
        # bound once: profile() is on the hot path of sampling strategies
        self._latency = table.latency

    # ------------------------------------------------------------------ NNI Profiler API
    def profile(self, sample: Mapping[str, Any], device: str | None = None) -> float:
        """Predicted latency (ms) of ``sample`` on ``device`` (default: the first device)."""
        return self._latency(sample, device)

    # ------------------------------------------------------------------ extras
    @property
    def devices(self) -> list[str]:
        return list(self.table.devices)

    @property
    def device(self) -> str:
        return self.table.default_device

    @property
    def input_shape(self) -> list[int]:
        return list(self.table.input_shape)

    def profile_all(self, sample: Mapping[str, Any]) -> dict[str, float]:
        """``{device: ms}`` for every device of the table."""
        return self.table.latencies(sample)

    __call__ = profile_all

    def breakdown(self, sample: Mapping[str, Any], device: str | None = None) -> dict[str, float]:
        """Latency (ms) of the fixed part and of each choice point for ``sample``."""
        return self.table.breakdown(sample, device)

    def to_table(self) -> dict[str, Any]:
        """The lookup table as a JSON-able dict."""
        return self.table.to_dict()

    def save(self, path: str | Path) -> Path:
        """Write the lookup table as JSON."""
        return self.table.save(path)

    @classmethod
    def load(cls, path: str | Path, model_space: Any = None,
             input_shape: Sequence[int] | None = None, device: str | None = None
             ) -> "LatencyProfiler":
        """A profiler from a saved table; checks it against ``model_space``/``input_shape`` and
        that it holds ``device`` when those are given."""
        prof = cls(model_space, table=LatencyTable.load(path), input_shape=input_shape)
        if device is not None and device not in prof.devices:
            raise TableMismatchError(f"the latency table {path} has devices {prof.devices}, not "
                                     f"{device!r}; build a table for that device")
        return prof

    def __repr__(self) -> str:
        return (f"LatencyProfiler(space={self.table.space_class!r}, devices={self.devices}, "
                f"input_shape={self.input_shape})")


class DirectLatencyProfiler(Profiler):
    """Latency (ms) of each sample from a full prediction of its frozen network, cached.

    Exact by construction; each new sample is frozen and read by the torch front end
    (:mod:`nnmeter_nas.graph.torch_frontend`; networks it cannot map go through the slower ONNX
    export; timings in benchmarks/results/torch_frontend.txt). Use it for spaces a lookup table
    cannot describe, e.g. a space whose own ``freeze`` builds a differently laid-out network
    (``NasBench201Space`` prunes dead edges), or to check a table.

    Parameters
    ----------
    model_space : nni.nas.nn.pytorch.ModelSpace
        As for :class:`LatencyProfiler`.
    predictor : LatencyPredictor, str or list
        As for :class:`LatencyProfiler`.
    input_shape : tuple of int, default=None
        As for :class:`LatencyProfiler`.
    cache_size : int, default=100_000
        Number of samples whose latencies are remembered.
    """

    def __init__(self, model_space: Any, predictor: Any,
                 input_shape: Sequence[int] | None = None, *, cache_size: int = 100_000) -> None:
        from .table_builder import resolve_predictors

        space = unwrap_model_space(model_space)
        super().__init__(space)
        self.space = space
        self.predictors = resolve_predictors(predictor)
        self.input_shape = space_input_shape(space, input_shape)
        self._labels = set(space.simplify())
        self._cache: dict[tuple, dict[str, float]] = {}
        self.cache_size = cache_size

    @property
    def devices(self) -> list[str]:
        return [p.device for p in self.predictors]

    def _key(self, sample: Mapping[str, Any]) -> tuple:
        from ..errors import SampleError
        from .sample_values import hashable_value

        missing = sorted(self._labels - set(sample))
        if missing:
            raise SampleError(f"sample lacks labels {missing} of {type(self.space).__name__}")
        unknown = sorted(set(sample) - self._labels)
        if unknown:
            raise SampleError(f"sample has labels {unknown} that {type(self.space).__name__} "
                              "does not have")
        return tuple(sorted((k, hashable_value(v)) for k, v in sample.items()))

    def profile_all(self, sample: Mapping[str, Any]) -> dict[str, float]:
        """``{device: ms}`` of ``sample``."""
        key = self._key(sample)
        hit = self._cache.get(key)
        if hit is not None:
            return dict(hit)
        from ..graph import load_graph
        from .torch_threads import torch_threads

        net = self.space.freeze(dict(sample))
        with torch_threads(1):  # the torch front end, or the ONNX export as its fallback
            graph = load_graph(net, input_shape=self.input_shape)
        out = {p.device: float(p.predict(graph)) for p in self.predictors}
        if len(self._cache) >= self.cache_size:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = out
        return dict(out)

    __call__ = profile_all

    def profile(self, sample: Mapping[str, Any], device: str | None = None) -> float:
        lat = self.profile_all(sample)
        if device is None:
            return lat[self.devices[0]]
        if device not in lat:
            raise TableMismatchError(f"DirectLatencyProfiler has devices {self.devices}, not "
                                     f"{device!r}")
        return lat[device]
