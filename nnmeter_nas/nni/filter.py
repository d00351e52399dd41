"""``LatencyFilter``: keep only architectures whose predicted latency meets a budget.

One object, three uses::

    lat_filter = LatencyFilter(20.0, predictor="cortexA76cpu_tflite21", input_shape=shape)
    Chain(RegularizedEvolution(), lat_filter)       # NNI middleware (gets ExecutableModelSpace)
    RandomOneShot(filter=lat_filter)                # NNI one-shot sampling filter (gets a sample)
    lat_filter({"layer_1": "k3", ...})              # plain callable -> bool

Several devices: ``max_ms={"dev_a": 20, "dev_b": 35}`` (or one number for all of
``devices``); an architecture must meet every device's budget. As middleware it marks rejected
models invalid, counts them, and stops the search with a warning after ``patience`` rejections
in a row (NNI's ``Filter`` patience) instead of letting the strategy spin forever.
"""
from __future__ import annotations

import logging
import math
import numbers
from typing import Any, Callable, Mapping, Sequence

from nni.nas.strategy.middleware import Filter

from ..errors import LatencyBudgetError, LatencySourceError
from ..packages.registry import did_you_mean
from .profiler import LatencyProfiler, space_input_shape, unwrap_model_space
from .table import LatencyTable

__all__ = ["LatencyFilter"]

_logger = logging.getLogger(__name__)


def _check_bound(bound: Any, what: str) -> Any:
    """``bound`` if it is None, a finite number of ms (> 0 for ``max_ms``, >= 0 for
    ``min_ms``) or a ``{device: such a number}`` mapping; else :class:`LatencyBudgetError`."""
    if bound is None:
        return None
    items = bound.items() if isinstance(bound, Mapping) else [(None, bound)]
    if isinstance(bound, Mapping) and not bound:
        raise LatencyBudgetError(f"LatencyFilter: {what}={{}} names no device; give "
                                 f"{{device: ms}} or one number for every device")
    for dev, v in items:
        where = f"{what}[{dev!r}]" if dev is not None else what
        if dev is not None and not isinstance(dev, str):
            raise LatencyBudgetError(f"LatencyFilter: {what} has the key {dev!r}; its keys "
                                     "are device names")
        ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) \
            and (v > 0 if what == "max_ms" else v >= 0)
        if not ok:
            need = "a finite number of ms above 0" if what == "max_ms" else \
                "a finite number of ms, 0 or more"
            raise LatencyBudgetError(f"LatencyFilter: {where} is {v!r}; it must be {need} "
                                     "(None for no bound)")
    return bound


def _check_budgets(max_ms: Any, min_ms: Any, devices: Any) -> list[str] | None:
    """Refuse budgets that would let every sample pass or none (not finite, not positive,
    min above max) and dict budgets on devices left out of ``devices``; returns ``devices``
    as a list (or None). Devices unknown to the profiler are refused once it is known."""
    _check_bound(max_ms, "max_ms")
    _check_bound(min_ms, "min_ms")
    if devices is not None:
        devices = [devices] if isinstance(devices, str) else list(devices)
        if not devices or not all(isinstance(d, str) for d in devices):
            raise LatencyBudgetError(f"LatencyFilter: devices={devices!r}; give a list of "
                                     "device names (or leave it out)")
        for what, bound in (("max_ms", max_ms), ("min_ms", min_ms)):
            if isinstance(bound, Mapping):
                for dev in bound:
                    if dev not in devices:
                        raise LatencyBudgetError(
                            f"LatencyFilter: {what} budgets device {dev!r}, which is not "
                            f"in devices={devices}; the filter would never check it. Add "
                            f"it to devices= or drop its budget.{did_you_mean(dev, devices)}")
        for dev in devices:
            if all(isinstance(b, Mapping) and dev not in b or b is None
                   for b in (max_ms, min_ms)):
                raise LatencyBudgetError(f"LatencyFilter: device {dev!r} of devices= has no "
                                         "budget in max_ms or min_ms; every sample would "
                                         "pass on it. Give it a budget or leave it out")
    for dev in (max_ms if isinstance(max_ms, Mapping) else {}):
        lo = min_ms.get(dev) if isinstance(min_ms, Mapping) else min_ms
        hi = max_ms[dev]
        if lo is not None and lo > hi:
            raise LatencyBudgetError(f"LatencyFilter: min_ms {lo} is above max_ms {hi} on "
                                     f"{dev!r}; no sample can pass")
    if not isinstance(max_ms, Mapping) and max_ms is not None:
        for dev, lo in (min_ms.items() if isinstance(min_ms, Mapping) else
                        [(None, min_ms)]):
            if lo is not None and lo > max_ms:
                where = f" on {dev!r}" if dev else ""
                raise LatencyBudgetError(f"LatencyFilter: min_ms {lo} is above max_ms "
                                         f"{max_ms}{where}; no sample can pass")
    return devices


def _is_predictor_like(obj: Any) -> bool:
    if isinstance(obj, str):
        return True
    if isinstance(obj, (list, tuple)):
        return bool(obj) and all(_is_predictor_like(o) for o in obj)
    return hasattr(obj, "predict_kernels") and hasattr(obj, "device")


class LatencyFilter(Filter):
    """Accept an architecture iff ``min_ms <= latency <= max_ms`` on every checked device.

    Works as NNI middleware (``Chain(strategy, LatencyFilter(...))``), as the ``filter=`` of
    NNI's ``RandomOneShot``, and as a plain callable on a sample or a frozen model.

    Parameters
    ----------
    max_ms : float, dict or None
        Budget in ms: one number (all ``devices``), a ``{device: ms}`` dict, or None (no upper
        bound; then ``min_ms`` is required).
    predictor : LatencyProfiler, LatencyTable, callable, LatencyPredictor, str or list
        What gives the latency: a :class:`LatencyProfiler` or :class:`LatencyTable`; any callable
        ``sample -> ms`` or ``sample -> {device: ms}``; or a :class:`~nnmeter_nas.LatencyPredictor`
        / predictor name / list of them, from which a profiler is built once the model space is
        known (``model_space=...`` here, or the experiment's space when used as middleware).
    min_ms : float, dict or None, default=None
        Lower bound(s) in ms, same forms as ``max_ms`` (e.g. to search a latency band).
    devices : list of str, default=None
        Devices that must meet the budget; default: the keys of a dict budget, else every device
        the predictor reports.
    model_space : nni.nas.nn.pytorch.ModelSpace, default=None
        To build the profiler now rather than when the middleware is attached.
    input_shape : tuple of int, default=None
        NCHW input shape of ``model_space`` (batch included), if it has no ``input_shape``.
    patience : int, default=1000
        Consecutive rejections after which the middleware reports no budget left (NNI ``Filter``).
    metric_for_invalid : float, default=None
        Metric reported to the strategy for rejected models (None: none, as NNI's default).
    retain_history : bool, default=True
        As NNI's ``Filter``: record the rejected models too (False saves memory).
    log_every : int, default=100
        Log a summary line every this many checks (0: never).

    Raises
    ------
    LatencyBudgetError
        For a budget that is not a finite positive number or names a device the predictor
        does not give.

    Examples
    --------
    >>> from nnmeter_nas.nni import LatencyFilter
    >>> latency = {"k3": 8.0, "k5": 11.0}                       # ms, e.g. from a table
    >>> keep = LatencyFilter(10.0, lambda sample: {"a76": latency[sample["conv"]]})
    >>> keep({"conv": "k3"}), keep({"conv": "k5"})
    (True, False)
    >>> keep.summary()
    'rejected 1 of 2 architectures (50%) outside the budget (latency <= 10 ms)'

    As middleware of a multi-trial strategy (the filter then builds or reads its latencies
    for the experiment's model space):

    >>> from nni.nas.strategy import Random
    >>> from nni.nas.strategy.middleware import Chain
    >>> strategy = Chain(Random(), keep)
    """

    def __init__(self, max_ms: float | Mapping[str, float] | None, predictor: Any = None, *,
                 min_ms: float | Mapping[str, float] | None = None,
                 devices: Sequence[str] | None = None, model_space: Any = None,
                 input_shape: Sequence[int] | None = None, patience: int = 1000,
                 metric_for_invalid: Any = None, retain_history: bool = True,
                 log_every: int = 100) -> None:
        super().__init__(self._accept_model, metric_for_invalid=metric_for_invalid,
                         patience=patience, retain_history=retain_history)
        if max_ms is None and min_ms is None:
            raise LatencyBudgetError("LatencyFilter needs max_ms, min_ms or both")
        devices = _check_budgets(max_ms, min_ms, devices)
        if predictor is None:
            raise ValueError("LatencyFilter needs predictor=: a LatencyProfiler, a LatencyTable, "
                             "a callable sample -> ms, or a LatencyPredictor / predictor name")
        self.max_ms = max_ms
        self.min_ms = min_ms
        self._devices = list(devices) if devices is not None else None
        self._input_shape = input_shape
        self._pending_predictors = None
        self._latency_fn: Callable[[Mapping[str, Any]], Any] | None = None
        self.profiler: LatencyProfiler | None = None
        self._labels: frozenset[str] | None = None
        self.log_every = log_every
        self.n_checked = 0
        self.n_rejected = 0
        self._warned_patience = False
        if isinstance(predictor, LatencyProfiler):
            self._use_profiler(predictor)
        elif isinstance(predictor, LatencyTable):
            self._use_profiler(LatencyProfiler(table=predictor))
        elif _is_predictor_like(predictor):
            self._pending_predictors = predictor
            if model_space is not None:
                self._build_profiler(model_space)
        elif callable(predictor):
            self._latency_fn = predictor
        else:
            raise TypeError(f"LatencyFilter cannot get latencies from a {type(predictor).__name__}")

    # ------------------------------------------------------------------ set-up
    def _use_profiler(self, profiler: LatencyProfiler) -> None:
        self.profiler = profiler
        self._latency_fn = profiler.profile_all
        self._labels = frozenset(profiler.table.labels)
        for dev in self._checked_devices(profiler.devices):
            if dev not in profiler.devices:
                raise LatencyBudgetError(
                    f"LatencyFilter: the budget names device {dev!r}, which the latency table "
                    f"does not profile;{did_you_mean(dev, profiler.devices)} profiled devices: "
                    f"{list(profiler.devices)}. Budget one of them, or profile that device too")
            lo, hi = profiler.table.bounds(dev)
            cap = self._bound(self.max_ms, dev)
            floor = self._bound(self.min_ms, dev)
            if cap is not None and cap < lo:
                _logger.warning("LatencyFilter: the budget %.4g ms on %s is below the fastest "
                                "architecture of the space (about %.4g ms): every sample will be "
                                "rejected", cap, dev, lo)
            if floor is not None and floor > hi:
                _logger.warning("LatencyFilter: min_ms %.4g ms on %s is above the slowest "
                                "architecture of the space (about %.4g ms): every sample will be "
                                "rejected", floor, dev, hi)

    def _build_profiler(self, model_space: Any) -> None:
        space = unwrap_model_space(model_space)
        shape = space_input_shape(space, self._input_shape)
        _logger.info("LatencyFilter: building the latency table of %s at input %s",
                     type(space).__name__, shape)
        self._use_profiler(LatencyProfiler(space, self._pending_predictors, shape))
        self._pending_predictors = None

    def _initialize_model_space(self, model_space: Any) -> Any:
        model_space = super()._initialize_model_space(model_space)
        if self._latency_fn is None and self._pending_predictors is not None:
            self._build_profiler(model_space)
        return model_space

    # ------------------------------------------------------------------ the check
    @staticmethod
    def _bound(bound: Any, device: str) -> float | None:
        if bound is None:
            return None
        if isinstance(bound, Mapping):
            return bound.get(device)
        return float(bound)

    def _checked_devices(self, available: Sequence[str]) -> list[str]:
        if self._devices is not None:
            return self._devices
        keys: list[str] = []
        for bound in (self.max_ms, self.min_ms):
            if isinstance(bound, Mapping):
                keys += [k for k in bound if k not in keys]
        return keys or list(available)

    def latencies(self, sample: Mapping[str, Any]) -> dict[str, float]:
        """``{device: ms}`` of ``sample`` as the filter sees it."""
        if self._latency_fn is None:
            raise RuntimeError("LatencyFilter has no profiler yet: pass model_space= (and "
                               "input_shape=) or attach it to an experiment with Chain(...)")
        out = self._latency_fn(sample)
        if not isinstance(out, Mapping):
            out = {"default": float(out)}
        return dict(out)

    def accept(self, sample: Mapping[str, Any]) -> bool:
        """True iff ``sample`` meets the budget on every checked device."""
        lat = self.latencies(sample)
        ok = True
        for dev in self._checked_devices(list(lat)):
            if dev in lat:
                value = lat[dev]
            elif list(lat) == ["default"]:  # a callable returning one number
                value = lat["default"]
            else:
                raise LatencySourceError(f"LatencyFilter: no latency for device {dev!r};"
                                         f"{did_you_mean(dev, lat)} the predictor gives "
                                         f"{list(lat)}")
            cap, floor = self._bound(self.max_ms, dev), self._bound(self.min_ms, dev)
            if (cap is not None and value > cap) or (floor is not None and value < floor):
                ok = False
                break
        self.n_checked += 1
        if not ok:
            self.n_rejected += 1
            _logger.debug("LatencyFilter rejected %s: %s", dict(sample), lat)
        if self.log_every and self.n_checked % self.log_every == 0:
            _logger.info("LatencyFilter: %s", self.summary())
        return ok

    def _accept_model(self, model: Any) -> bool:
        sample = model.sample
        if sample is None:
            raise ValueError("LatencyFilter got a model with no sample (an unfrozen space?)")
        if self._labels is not None:  # drop evaluator/other labels the table does not know
            sample = {k: v for k, v in sample.items() if k in self._labels}
        return self.accept(sample)

    def __call__(self, sample_or_model: Any) -> bool:
        if hasattr(sample_or_model, "sample") and not isinstance(sample_or_model, Mapping):
            return self._accept_model(sample_or_model)
        return self.accept(sample_or_model)

    def budget_text(self) -> str:
        """The budget in words, e.g. ``"latency <= 10 ms"`` or ``"cortexA76cpu_tflite21 latency
        <= 20 ms, adreno640gpu_tflite21 latency <= 9 ms"``."""
        def side(bound: Any, op: str) -> list[str]:
            if bound is None:
                return []
            if isinstance(bound, Mapping):
                return [f"{dev} latency {op} {ms:g} ms" for dev, ms in bound.items()]
            return [f"latency {op} {float(bound):g} ms"]
        return ", ".join(side(self.min_ms, ">=") + side(self.max_ms, "<="))

    def summary(self) -> str:
        rate = self.n_rejected / self.n_checked if self.n_checked else 0.0
        return (f"rejected {self.n_rejected} of {self.n_checked} architectures ({rate:.0%}) "
                f"outside the budget ({self.budget_text()})")

    # ------------------------------------------------------------------ NNI middleware
    def _rejected_in_a_row(self) -> int:
        # NNI's Filter counts consecutive rejections; its public state_dict() reports the count
        return int(Filter.state_dict(self)["filter_count_patience"])

    def budget_available(self) -> bool:
        if self._rejected_in_a_row() >= self.patience:
            if not self._warned_patience:
                self._warned_patience = True
                hint = ""
                if self.profiler is not None:
                    fastest = {d: round(self.profiler.table.bounds(d)[0], 4)
                               for d in self._checked_devices(self.profiler.devices)}
                    hint = f" The fastest architectures of the space take about {fastest} ms."
                _logger.warning(
                    "LatencyFilter: %d architectures in a row missed the latency budget "
                    "(%s); stopping the search (%d of %d checked were rejected).%s Relax the "
                    "budget or raise patience=.", self._rejected_in_a_row(), self.budget_text(),
                    self.n_rejected, self.n_checked, hint)
            return False
        return self.engine.budget_available()

    def _cleanup(self) -> None:
        _logger.info("LatencyFilter: %s", self.summary())
        super()._cleanup()

    def extra_repr(self) -> str:
        return f"max_ms={self.max_ms}, min_ms={self.min_ms}, devices={self._devices}"
