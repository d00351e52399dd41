"""NSGA-II style multi-objective evolution over accuracy and latency (an NNI 3 strategy)."""
from __future__ import annotations

import logging
from typing import Mapping, Sequence

import numpy as np
from nni.mutable import Categorical

from ..errors import DeviceListError
from ._base import LatencyAwareStrategy, LatencySource, Trial
from .pareto import crowding_distance, non_dominated_sort, pareto_mask

__all__ = ["MultiObjectiveEvolution"]

_logger = logging.getLogger("nni.nnmeter_nas.strategies")


class MultiObjectiveEvolution(LatencyAwareStrategy):
    """NSGA-II (Deb et al. 2002) over ``metric`` (maximised) and latency on ``devices`` (minimised).

    Generational: a population of ``population_size`` trained architectures; each generation
    breeds ``population_size`` children (binary tournaments on front rank, then crowding distance;
    uniform crossover with probability ``crossover_prob``; each categorical dimension mutated with
    probability ``1 / n_dims``, at least one change), trains them, and keeps the best
    ``population_size`` of parents and children by non-dominated sorting and crowding distance.

    Latencies are looked up before training: children that are duplicates, invalid in the space or
    over the optional ``budgets`` are never trained (they are re-bred). :meth:`export_pareto_front`
    returns the non-dominated trained architectures.

    Parameters
    ----------
    latency : callable
        ``sample -> {device: ms}``.
    devices : str or list of str
        Devices whose latency is an objective (at least one).
    budgets : dict, default=None
        Optional hard budgets ``{device: max_ms}`` (any devices).
    population_size : int, default=20
        Architectures per generation.
    crossover_prob : float, default=0.9
        Probability that a child is bred by uniform crossover (else copied from one parent).
    seed, patience, log_every : int
        See :class:`~nnmeter_nas.strategies.LatencyAwareStrategy` (defaults None, 1000, 10).

    Examples
    --------
    >>> latency = {"k3": 3.0, "k5": 4.5, "k7": 6.0}             # ms, e.g. a LatencyProfiler
    >>> def lookup(sample):
    ...     return {"a76": latency[sample["conv"]]}
    >>> from nnmeter_nas.strategies import MultiObjectiveEvolution
    >>> strategy = MultiObjectiveEvolution(lookup, devices=["a76"], population_size=8, seed=0)
    >>> strategy.devices
    ('a76',)

    After an NNI experiment with it has run, ``strategy.export_pareto_front()`` lists the
    non-dominated trained architectures, fastest first.
    """

    _name = "MultiObjectiveEvolution"

    def __init__(self, latency: LatencySource, devices: Sequence[str], budgets: Mapping[str, float] | None = None,
                 *, population_size: int = 20, crossover_prob: float = 0.9, seed: int | None = None,
                 patience: int = 1000, log_every: int = 10) -> None:
        if isinstance(devices, str):
            devices = [devices]
        if not devices:
            raise DeviceListError("MultiObjectiveEvolution needs at least one latency objective "
                                  "device")
        super().__init__(latency, budgets, devices=devices, seed=seed, patience=patience, log_every=log_every)
        self.objective_devices = tuple(devices)
        if population_size < 2:
            raise ValueError(f"population_size must be >= 2, got {population_size}")
        if not 0.0 <= crossover_prob <= 1.0:
            raise ValueError(f"crossover_prob must be in [0, 1], got {crossover_prob}")
        self.population_size = population_size
        self.crossover_prob = crossover_prob
        self._population: list[Trial] = []
        self._rank: dict[int, tuple[int, float]] = {}

    def extra_repr(self) -> str:
        return (f"devices={list(self.objective_devices)}, budgets={self.budgets}, "
                f"population_size={self.population_size}, seed={self.seed}")

    # ------------------------------------------------------------------ objectives
    def _objectives(self, trials: Sequence[Trial]) -> np.ndarray:
        return np.array([[-t.metric, *(t.latency[d] for d in self.objective_devices)] for t in trials],
                        dtype=np.float64).reshape(len(trials), 1 + len(self.objective_devices))

    def _select(self, trials: list[Trial], k: int) -> list[Trial]:
        """Keep ``k`` trials by front rank then crowding distance; records ranks for tournaments."""
        F = self._objectives(trials)
        chosen: list[int] = []
        ranks: dict[int, tuple[int, float]] = {}
        for r, front in enumerate(non_dominated_sort(F)):
            crowd = crowding_distance(F[front])
            for i, c in zip(front, crowd):
                ranks[int(i)] = (r, float(c))
            if len(chosen) + len(front) <= k:
                chosen.extend(int(i) for i in front)
            else:
                order = np.argsort(-crowd, kind="stable")
                chosen.extend(int(front[j]) for j in order[: k - len(chosen)])
                break
        self._rank = {id(trials[i]): ranks[i] for i in chosen}
        return [trials[i] for i in chosen]

    def _tournament(self) -> Trial:
        a, b = (self._population[i] for i in self._random_state.randint(len(self._population), size=2))
        ra, rb = self._rank.get(id(a), (0, 0.0)), self._rank.get(id(b), (0, 0.0))
        if ra[0] != rb[0]:
            return a if ra[0] < rb[0] else b
        return a if ra[1] >= rb[1] else b

    # ------------------------------------------------------------------ breeding
    def _breed(self) -> tuple[dict, dict] | None:
        """One new feasible child (a random feasible architecture if breeding keeps failing)."""
        child = self._breed_one()
        if child is None:
            _logger.info("%s: breeding found no new feasible child in %d tries; sampling at random.",
                         self._name, self.patience)
            return self.feasible_random()
        return child

    def _breed_one(self) -> tuple[dict, dict] | None:
        dims = [(k, m) for k, m in self.search_dimensions().items() if isinstance(m, Categorical)]
        for _ in range(self.patience):
            p1, p2 = self._tournament(), self._tournament()
            child = dict(p1.sample)
            if self._random_state.uniform() < self.crossover_prob:
                for label in child:
                    if self._random_state.uniform() < 0.5 and label in p2.sample:
                        child[label] = p2.sample[label]
            if dims:
                prob = 1.0 / len(dims)
                changed = False
                for label, mutable in dims:
                    if self._random_state.uniform() < prob:
                        child[label] = mutable.values[self._random_state.randint(len(mutable.values))]
                        changed = True
                if not changed:
                    label, mutable = dims[self._random_state.randint(len(dims))]
                    child[label] = mutable.values[self._random_state.randint(len(mutable.values))]
            ok, lat = self.consider(child)
            if not ok or lat is None:
                continue
            if self.is_feasible(lat):
                return child, lat
            self.reject(child)
        return None

    # ------------------------------------------------------------------ main loop
    def _run(self) -> None:
        _logger.info("%s: initial population of %d, objectives metric and latency on %s.",
                     self._name, self.population_size, list(self.objective_devices))
        initial = []
        while len(initial) < self.population_size:
            if not self.wait_for_resource():
                return
            got = self.feasible_random()
            if got is None:
                return
            initial.append(self.submit(*got))
        self.engine.wait_models(*initial)
        self._population = self._select(self._trained(self._trials), self.population_size)

        generation = 0
        while True:
            children = []
            generation_trials_start = len(self._trials)
            while len(children) < self.population_size:
                if not self.wait_for_resource():
                    break
                got = self._breed() if self._population else self.feasible_random()
                if got is None:
                    break
                children.append(self.submit(*got))
            if children:
                self.engine.wait_models(*children)
            generation += 1
            new = self._trained(self._trials[generation_trials_start:])
            self._population = self._select(self._population + new, self.population_size)
            _logger.info("%s: generation %d done, %d on the first front.", self._name, generation,
                         sum(1 for t in self._population if self._rank.get(id(t), (1,))[0] == 0))
            if len(children) < self.population_size:
                return

    @staticmethod
    def _trained(trials: Sequence[Trial]) -> list[Trial]:
        return [t for t in trials if t.status == "trained"]

    # ------------------------------------------------------------------ results
    def export_pareto_front(self) -> list[dict]:
        """The non-dominated feasible trained architectures, sorted by latency on the first
        objective device: ``[{"sample": dict, "metric": float, "latency": {device: ms}}, ...]``
        (duplicates in objective space are kept once)."""
        trials = [t for t in self._trained(self._trials) if self.is_feasible(t.latency)]
        if not trials:
            return []
        F = self._objectives(trials)
        mask = pareto_mask(F)
        front, seen = [], set()
        for t, keep, f in zip(trials, mask, F):
            if keep and tuple(f) not in seen:
                seen.add(tuple(f))
                front.append({"sample": dict(t.sample), "metric": t.metric, "latency": dict(t.latency)})
        front.sort(key=lambda r: (r["latency"][self.objective_devices[0]], -r["metric"]))
        return front

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._population = self._select(self._trained(self._trials), self.population_size) \
            if self._trained(self._trials) else []
