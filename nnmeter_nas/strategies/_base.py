"""Shared machinery of the latency-aware NNI 3 strategies.

A *latency source* is any callable ``sample -> {device: ms}`` (a lookup table, a
``LatencyProfiler``, a function over a measured table). A callable that returns a plain number is
accepted when exactly one device is involved. Budgets are ``{device: max_ms}``; a sample is
*feasible* when its latency is at most the budget on every budgeted device.

Progress goes to the logger ``nni.nnmeter_nas.strategies`` (a child of NNI's ``nni`` logger, so it
lands in NNI's console output and the experiment log).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
from numpy.random import RandomState

from nni.mutable import Categorical, MutableAnnotation, Sample, SampleValidationError
from nni.nas.execution import ExecutionEngine
from nni.nas.execution.event import ModelEvent, ModelEventType
from nni.nas.space import ExecutableModelSpace, ModelStatus
from nni.nas.strategy.base import Strategy

from ..errors import (DeviceListError, InfeasibleBudgetError, LatencyBudgetError,
                      LatencySourceError)
from ..packages.registry import did_you_mean

__all__ = [
    "LatencySource",
    "InfeasibleBudgetError",
    "LatencySourceError",
    "Trial",
    "LatencyAwareStrategy",
    "sample_key",
]

_logger = logging.getLogger("nni.nnmeter_nas.strategies")

LatencySource = Callable[[Sample], "Mapping[str, float] | float"]


def sample_key(sample: Mapping[str, Any]) -> tuple:
    """Hashable, order-independent key of a sample (lists become tuples)."""
    def freeze(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return tuple(freeze(x) for x in v)
        if isinstance(v, dict):
            return tuple(sorted((k, freeze(x)) for k, x in v.items()))
        return v
    return tuple(sorted((k, freeze(v)) for k, v in sample.items()))


@dataclass
class Trial:
    """One architecture the strategy had trained: sample, metric (``None`` until reported or when
    unusable), latency ``{device: ms}`` and the strategy's fitness of it."""

    sample: dict
    latency: dict
    metric: float | None = None
    fitness: float | None = None
    status: str = "running"  # running | trained | failed | bad_metric


def source_devices(latency: Any) -> list[str] | None:
    """The devices a latency source says it gives (a ``LatencyTable``, a ``LatencyProfiler``
    or one's bound method), or None when it does not say (a plain function)."""
    for obj in (latency, getattr(latency, "__self__", None)):
        devices = getattr(obj, "devices", None)
        if isinstance(devices, (list, tuple)) and all(isinstance(d, str) for d in devices):
            return list(devices)
    return None


def metric_value(metric: Any) -> float | None:
    """The scalar of an NNI trial metric (a number or a dict with ``'default'``), or ``None``."""
    if metric is None:
        return None
    if isinstance(metric, Mapping):
        metric = metric.get("default")
    try:
        return float(metric)
    except (TypeError, ValueError):
        return None


class LatencyAwareStrategy(Strategy):
    """Base class: latency lookups with checks and caching, budget feasibility, sample
    generation with deduplication and retries, trial bookkeeping and progress logging.

    Parameters
    ----------
    latency : callable
        ``sample -> {device: ms}`` (or a number when only one device is involved), e.g. a
        :class:`~nnmeter_nas.nni.LatencyProfiler`'s ``profile_all``.
    budgets : dict, default=None
        ``{device: max_ms}``; None or empty for no latency constraint.
    devices : list of str, default=()
        Devices the strategy must know the latency of besides the budgeted ones (e.g. objectives).
    seed : int, default=None
        Seed of the strategy's ``numpy.random.RandomState``.
    patience : int, default=1000
        How many consecutive new candidate samples may be rejected (duplicate, invalid or over
        budget) before the strategy gives up. If none of them was ever feasible it raises
        :class:`InfeasibleBudgetError` naming the smallest latency seen per device, before
        training anything.
    log_every : int, default=10
        Log progress every this many finished trials.
    """

    _name = "LatencyAwareStrategy"

    def __init__(self, latency: LatencySource, budgets: Mapping[str, float] | None = None, *,
                 devices: Sequence[str] = (), seed: int | None = None, patience: int = 1000,
                 log_every: int = 10) -> None:
        super().__init__()
        if not callable(latency):
            raise TypeError(f"latency must be a callable sample -> {{device: ms}} (a lookup table, a "
                            f"LatencyProfiler, a function), got {type(latency).__name__}")
        self.latency_source = latency
        self.budgets: dict[str, float] = {}
        for device, ms in dict(budgets or {}).items():
            try:
                ms = float(ms)
            except (TypeError, ValueError):
                ms = float("nan")
            if not math.isfinite(ms) or ms <= 0:
                raise LatencyBudgetError(f"{self._name}: latency budget for device {device!r} "
                                         f"must be a positive number of ms, got {budgets[device]!r}")
            self.budgets[str(device)] = ms
        self.devices: tuple[str, ...] = tuple(dict.fromkeys([*self.budgets, *devices]))
        known = source_devices(latency)
        if known is not None:  # a table or profiler says its devices: check names now
            for device in self.devices:
                if device not in known:
                    what = "budgets" if device in self.budgets else "devices="
                    raise LatencyBudgetError(
                        f"{self._name}: {what} names device {device!r}, which the latency "
                        f"source does not give;{did_you_mean(device, known)} its devices: "
                        f"{list(known)}. Name one of them, or profile that device too")
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.patience = int(patience)
        self.log_every = max(1, int(log_every))
        self.seed = seed
        self._random_state = RandomState(seed)

        self._latency_cache: dict[tuple, dict[str, float]] = {}
        self._seen: set[tuple] = set()          # samples submitted for training
        self._trials: list[Trial] = []
        self._running: dict[int, Trial] = {}    # id(model) -> trial
        self._min_latency: dict[str, float] = {}
        self._num_candidates = 0                # distinct candidates looked at
        self._num_feasible_candidates = 0
        self._rejected: set[tuple] = set()      # candidates over budget, never trained
        self._num_bad_metrics = 0
        self._best: Trial | None = None

    # ------------------------------------------------------------------ latency and budgets
    def latency_of(self, sample: Mapping[str, Any]) -> dict[str, float]:
        """Latency ``{device: ms}`` of a sample from the latency source (cached), checked: every
        device in :attr:`devices` present, finite and non-negative."""
        key = sample_key(sample)
        cached = self._latency_cache.get(key)
        if cached is not None:
            return cached
        raw = self.latency_source(dict(sample))
        if isinstance(raw, Mapping):
            lat = {str(d): v for d, v in raw.items()}
        elif isinstance(raw, (int, float, np.integer, np.floating)) and len(self.devices) <= 1:
            lat = {self.devices[0] if self.devices else "latency": raw}
        else:
            raise LatencySourceError(
                f"latency source {self.latency_source!r} returned {raw!r} for sample {dict(sample)}; "
                f"it must return {{device: ms}} for devices {list(self.devices)} (a plain number is "
                "accepted only when one device is involved)")
        for device in self.devices:
            if device not in lat or lat[device] is None:
                raise LatencySourceError(
                    f"latency source {self.latency_source!r} returned no latency for device {device!r} "
                    f"(it returned devices {sorted(lat)}) for sample {dict(sample)}."
                    f"{did_you_mean(device, lat)} Give the strategy a "
                    f"source that covers every budgeted/objective device: {list(self.devices)}")
            try:
                value = float(lat[device])
            except (TypeError, ValueError):
                value = float("nan")
            if not math.isfinite(value) or value < 0:
                raise LatencySourceError(
                    f"latency source returned {lat[device]!r} ms for device {device!r} and sample "
                    f"{dict(sample)}; latencies must be finite and non-negative")
            lat[device] = value
        result = {d: float(lat[d]) for d in self.devices} if self.devices else \
            {d: float(v) for d, v in lat.items()}
        self._latency_cache[key] = result
        for device in self.budgets:
            ms = result[device]
            if ms < self._min_latency.get(device, math.inf):
                self._min_latency[device] = ms
        return result

    def violation(self, latency: Mapping[str, float]) -> float:
        """Total relative budget overshoot ``sum_d max(0, lat_d / budget_d - 1)``; 0 when feasible."""
        return float(sum(max(0.0, latency[d] / b - 1.0) for d, b in self.budgets.items()))

    def is_feasible(self, latency: Mapping[str, float]) -> bool:
        """Whether the latency meets every budget."""
        return all(latency[d] <= b for d, b in self.budgets.items())

    def infeasible_error(self, tried: int) -> InfeasibleBudgetError:
        """The error raised when no candidate met the budgets."""
        parts = ", ".join(f"{d}: budget {b:.4g} ms, smallest seen {self._min_latency.get(d, math.nan):.4g} ms"
                          for d, b in self.budgets.items())
        return InfeasibleBudgetError(
            f"{self._name}: none of the {tried} distinct architectures sampled meets the latency "
            f"budgets ({parts}). Raise the budgets above the smallest latency seen, or increase "
            f"patience (now {self.patience}) if feasible architectures are very rare.")

    # ------------------------------------------------------------------ samples
    def search_dimensions(self) -> dict[str, Any]:
        """The mutables of the model space a strategy samples, ``{label: mutable}`` (annotations
        such as constraints excluded)."""
        return {k: v for k, v in self.model_space.simplify().items() if not isinstance(v, MutableAnnotation)}

    def is_valid(self, sample: Mapping[str, Any]) -> bool:
        """Whether the model space accepts the sample (values and constraints)."""
        return self.model_space.contains(dict(sample))

    def random_sample(self, retries: int = 1000) -> dict | None:
        """A random sample the model space accepts (NNI's own sampling, retried on constraint
        violations); ``None`` if ``retries`` draws all failed."""
        for _ in range(retries):
            sample: dict = {}
            try:
                self.model_space.random(memo=sample, random_state=self._random_state)
            except SampleValidationError:
                continue
            return sample
        return None

    def consider(self, sample: Mapping[str, Any]) -> tuple[bool, dict[str, float] | None]:
        """Look at a candidate: returns ``(is_new_and_valid, latency)``. Counts candidates and
        feasibility for progress reports. Latency is ``None`` when not new or not valid."""
        key = sample_key(sample)
        if key in self._seen or not self.is_valid(sample):
            return False, None
        new_candidate = key not in self._latency_cache
        lat = self.latency_of(sample)
        if new_candidate:
            self._num_candidates += 1
            if self.is_feasible(lat):
                self._num_feasible_candidates += 1
        return True, lat

    def feasible_random(self) -> tuple[dict, dict[str, float]] | None:
        """A new (never submitted) random feasible sample and its latency.

        After :attr:`patience` consecutive rejected draws: raises :class:`InfeasibleBudgetError` if
        no feasible architecture was ever seen, else returns ``None`` (the space is exhausted).
        """
        for _ in range(self.patience):
            sample = self.random_sample()
            if sample is None:
                break
            ok, lat = self.consider(sample)
            if not ok or lat is None:
                continue
            if self.is_feasible(lat):
                return sample, lat
            self.reject(sample)
        if self._num_feasible_candidates == 0 and self.budgets:
            raise self.infeasible_error(self._num_candidates)
        _logger.warning("%s: no new feasible architecture after %d draws; the space looks exhausted. "
                        "Stopping.", self._name, self.patience)
        return None

    def reject(self, sample: Mapping[str, Any]) -> None:
        """Record a candidate left untrained because it is over budget (for progress reports)."""
        self._rejected.add(sample_key(sample))

    def neighbours(self, sample: Mapping[str, Any]) -> Iterator[dict]:
        """All samples that differ from ``sample`` in one categorical dimension (other
        dimensions are skipped), in random order."""
        dims = [(label, m) for label, m in self.search_dimensions().items() if isinstance(m, Categorical)]
        out = []
        for label, mutable in dims:
            for value in mutable.values:
                if value != sample.get(label):
                    out.append({**sample, label: value})
        for i in self._random_state.permutation(len(out)):
            yield out[i]

    # ------------------------------------------------------------------ submission and events
    def submit(self, sample: dict, latency: dict[str, float]) -> ExecutableModelSpace:
        """Freeze ``sample`` and submit it to the engine; records a running :class:`Trial`."""
        model = self.model_space.freeze(sample)
        self._seen.add(sample_key(sample))
        trial = Trial(sample=dict(sample), latency=dict(latency))
        self._trials.append(trial)
        self._running[id(model)] = trial
        self.engine.submit_models(model)
        return model

    def _initialize(self, model_space: ExecutableModelSpace, engine: ExecutionEngine) -> ExecutableModelSpace:
        engine.register_model_event_callback(ModelEventType.TrainingEnd, self._on_training_end)
        return model_space

    def _cleanup(self) -> None:
        self.engine.unregister_model_event_callback(ModelEventType.TrainingEnd, self._on_training_end)
        self._log_progress(final=True)

    def _on_training_end(self, event: ModelEvent) -> None:
        trial = self._running.pop(id(event.model), None)
        if trial is None:
            _logger.debug("%s: ignoring a model it did not submit: %s", self._name, event.model)
            return
        value = metric_value(event.model.metric)
        if event.model.status != ModelStatus.Trained and value is None:
            trial.status = "failed"
            _logger.warning("%s: trial %s ended as %s without a metric; it is left out.",
                            self._name, trial.sample, event.model.status.value)
        elif value is None or not math.isfinite(value):
            trial.status = "bad_metric"
            self._num_bad_metrics += 1
            _logger.error("%s: trial %s reported a non-finite or non-numeric metric %r; it is left out of "
                          "the search (results so far are kept). Check the evaluator.",
                          self._name, trial.sample, event.model.metric)
        else:
            trial.metric = value
            trial.status = "trained"
            trial.fitness = self.fitness(trial)
            if self.is_feasible(trial.latency) and (self._best is None or value > self._best.metric):
                self._best = trial
            self.on_trial_done(trial)
        done = sum(1 for t in self._trials if t.status != "running")
        if done % self.log_every == 0:
            self._log_progress()

    def fitness(self, trial: Trial) -> float:
        """The value the strategy maximises for a trained trial (default: its metric)."""
        assert trial.metric is not None
        return trial.metric

    def on_trial_done(self, trial: Trial) -> None:
        """Hook: a trial finished with a finite metric."""

    def _log_progress(self, final: bool = False) -> None:
        done = [t for t in self._trials if t.status != "running"]
        share = (self._num_feasible_candidates / self._num_candidates) if self._num_candidates else float("nan")
        best = self._best
        best_txt = "none yet" if best is None else \
            f"{best.metric:.4g} at {', '.join(f'{d} {ms:.3g} ms' for d, ms in best.latency.items())}"
        _logger.info("%s%s: %d trials done (%d failed/bad metric), %d candidates looked at, %.0f%% feasible "
                     "(%d over budget never trained), best feasible so far %s",
                     self._name, " finished" if final else "", len(done),
                     sum(t.status in ("failed", "bad_metric") for t in done), self._num_candidates,
                     100 * share, len(self._rejected), best_txt)

    # ------------------------------------------------------------------ results
    @property
    def trials(self) -> list[Trial]:
        """All trials submitted, in submission order."""
        return list(self._trials)

    def best_feasible(self) -> Trial | None:
        """The feasible trained trial with the highest metric."""
        return self._best

    def list_models(self, sort: bool = True, limit: int | None = None) -> Iterator[ExecutableModelSpace]:
        """As NNI's, but with ``sort`` non-finite metrics are left out (they cannot be ranked)."""
        if not sort:
            yield from super().list_models(sort=False, limit=limit)
            return
        models = [m for m in self.engine.list_models(status=ModelStatus.Trained)
                  if metric_value(m.metric) is not None and math.isfinite(metric_value(m.metric))]
        yield from sorted(models, key=lambda m: metric_value(m.metric), reverse=True)[:limit]

    def state_dict(self) -> dict:
        return {
            "random_state": self._random_state.get_state(),
            "trials": [vars(t).copy() for t in self._trials if t.status != "running"],
            "seen": list(self._seen),
            "rejected": list(self._rejected),
            "counters": [self._num_candidates, self._num_feasible_candidates, self._num_bad_metrics],
            "min_latency": dict(self._min_latency),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self._random_state.set_state(state_dict["random_state"])
        self._trials = [Trial(**t) for t in state_dict["trials"]]
        self._seen = set(state_dict["seen"])
        self._rejected = set(state_dict["rejected"])
        self._num_candidates, self._num_feasible_candidates, self._num_bad_metrics = state_dict["counters"]
        self._min_latency = dict(state_dict["min_latency"])
        self._best = None
        for t in self._trials:
            if t.status == "trained" and self.is_feasible(t.latency) and \
                    (self._best is None or t.metric > self._best.metric):
                self._best = t
        for t in self._trials:
            if t.status == "trained":
                self.on_trial_done(t)

    def extra_repr(self) -> str:
        return f"budgets={self.budgets}, seed={self.seed}"
