"""Constrained random search (an NNI 3 strategy): the baseline of the latency-aware strategies."""
from __future__ import annotations

import logging
from typing import Mapping, Sequence

from ._base import LatencyAwareStrategy, LatencySource

__all__ = ["ConstrainedRandom"]

_logger = logging.getLogger("nni.nnmeter_nas.strategies")


class ConstrainedRandom(LatencyAwareStrategy):
    """Random search among the architectures within the latency budgets.

    Samples the space with NNI's own sampler (so constraints of the space hold), looks the latency
    up, and trains only new architectures that meet every budget. With no budgets it is plain
    random search without repeats. A budget no sampled architecture meets raises
    :class:`~nnmeter_nas.strategies.InfeasibleBudgetError` (with the smallest latency seen) after
    ``patience`` draws, before anything is trained.

    Parameters
    ----------
    latency : callable
        ``sample -> {device: ms}`` (see :class:`~nnmeter_nas.strategies.LatencyAwareStrategy`).
    budgets : dict, default=None
        ``{device: max_ms}``; None for plain random search.
    seed, patience, log_every : int
        See :class:`~nnmeter_nas.strategies.LatencyAwareStrategy` (defaults None, 1000, 10).
    devices : list of str, default=()
        Devices whose latency the strategy also needs (see
        :class:`~nnmeter_nas.strategies.LatencyAwareStrategy`).

    Examples
    --------
    The latency source is any callable ``sample -> {device: ms}``:

    >>> latency = {"k3": 3.0, "k5": 4.5, "k7": 6.0}             # ms, e.g. a LatencyProfiler
    >>> def lookup(sample):
    ...     return {"a76": latency[sample["conv"]]}
    >>> from nnmeter_nas.strategies import ConstrainedRandom
    >>> strategy = ConstrainedRandom(lookup, budgets={"a76": 5.0}, seed=0)
    >>> strategy.latency_of({"conv": "k5"})
    {'a76': 4.5}
    >>> strategy.is_feasible({"a76": 4.5}), strategy.is_feasible({"a76": 6.0})
    (True, False)

    It is then the ``strategy`` of an NNI ``NasExperiment`` (or of
    :func:`~nnmeter_nas.nni.run_sequential_experiment`).
    """

    _name = "ConstrainedRandom"

    def __init__(self, latency: LatencySource, budgets: Mapping[str, float] | None = None, *,
                 seed: int | None = None, patience: int = 1000, log_every: int = 10,
                 devices: Sequence[str] = ()) -> None:
        super().__init__(latency, budgets, devices=devices, seed=seed, patience=patience, log_every=log_every)

    def _run(self) -> None:
        _logger.info("%s: sampling under budgets %s.", self._name, self.budgets)
        while self.wait_for_resource():
            got = self.feasible_random()
            if got is None:
                return
            self.submit(*got)
        self.engine.wait_models()
