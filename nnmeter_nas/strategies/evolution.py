"""Constrained regularized evolution with latency-aware mutation (an NNI 3 strategy)."""
from __future__ import annotations

import collections
import logging
from typing import Deque, Mapping, Sequence

import numpy as np
from nni.mutable import Categorical

from ..errors import LatencyBudgetError
from ._base import LatencyAwareStrategy, LatencySource, Trial, sample_key
from .rewards import MnasNetReward

__all__ = ["ConstrainedEvolution"]

_logger = logging.getLogger("nni.nnmeter_nas.strategies")


class ConstrainedEvolution(LatencyAwareStrategy):
    """Regularized (aging) evolution under latency budgets.

    Follows Real et al. 2019 (tournament of ``sample_size`` from a population of the
    ``population_size`` most recent trained architectures, the oldest leaves), with two changes:

    - The latency of a candidate is looked up *before* training. With ``reward="constrained"``
      (default) an architecture over budget is never trained; the initial population is drawn at
      random among feasible architectures.
    - Mutation is latency-aware: the child is a one-dimension mutation of the parent chosen
      among those that are new, valid in the space and within budget (all one-dimension
      neighbours are looked up before anything is trained), so no training slot and little
      patience is spent on infeasible children. Among the qualifying neighbours the choice is
      random with weights ``exp(budget_preference * (u - u_max))``, ``u`` being the neighbour's
      budget use ``max_d latency_d / budget_d``: it leans towards children that use the budget,
      on the prior that under a latency budget the most accurate architectures spend most of it
      (true where accuracy grows with compute, as in NAS-Bench-201). ``budget_preference=0``
      picks uniformly. If the parent has no qualifying neighbour the strategy tries random
      multi-dimension mutations, then a random feasible architecture.

    With ``reward=MnasNetReward(...)`` the budgets are soft targets: any architecture may be
    trained and the population is ranked by the MnasNet reward; mutation then prefers children
    that reduce the parent's overshoot when the parent is over budget (it *restores* feasibility).

    Parameters
    ----------
    latency : callable
        ``sample -> {device: ms}`` (lookup table, ``LatencyProfiler``, ...).
    budgets : dict
        ``{device: max_ms}`` (targets for the MnasNet reward). Required.
    population_size : int, default=20
        Number of trained architectures kept.
    sample_size : int, default=5
        Tournament size.
    reward : "constrained" or MnasNetReward, default="constrained"
        ``"constrained"`` (hard budgets, fitness = metric) or a :class:`MnasNetReward`.
    seed, patience, log_every : int
        See :class:`~nnmeter_nas.strategies.LatencyAwareStrategy` (defaults None, 1000, 10).
    devices : list of str, default=()
        Devices whose latency the strategy also needs (see
        :class:`~nnmeter_nas.strategies.LatencyAwareStrategy`).
    max_neighbours : int, default=None
        Look at no more than this many one-dimension neighbours per mutation (None: all).
    budget_preference : float, default=10.0
        Lean of the mutation towards children that use the budget (see above; hard budgets only).
        The default was picked on a pilot run of the NAS-Bench-201 benchmark (seeds 0-5, CPU
        and VPU tasks); 0 gives uniform latency-feasible mutation.

    Examples
    --------
    >>> latency = {"k3": 3.0, "k5": 4.5, "k7": 6.0}             # ms, e.g. a LatencyProfiler
    >>> def lookup(sample):
    ...     return {"a76": latency[sample["conv"]]}
    >>> from nnmeter_nas.strategies import ConstrainedEvolution, MnasNetReward
    >>> hard = ConstrainedEvolution(lookup, budgets={"a76": 5.0}, population_size=10,
    ...                             sample_size=3, seed=0)
    >>> hard.soft, hard.is_feasible(lookup({"conv": "k7"}))
    (False, False)
    >>> soft = ConstrainedEvolution(lookup, budgets={"a76": 5.0}, reward=MnasNetReward())
    >>> soft.soft
    True

    Either is the ``strategy`` of an NNI ``NasExperiment`` (see
    ``examples/multi_trial_spos.py``); ``hard`` never trains an architecture over 5 ms.
    """

    _name = "ConstrainedEvolution"

    def __init__(self, latency: LatencySource, budgets: Mapping[str, float], *,
                 population_size: int = 20, sample_size: int = 5,
                 reward: str | MnasNetReward = "constrained",
                 seed: int | None = None, patience: int = 1000, log_every: int = 10,
                 max_neighbours: int | None = None, budget_preference: float = 10.0,
                 devices: Sequence[str] = ()) -> None:
        if not budgets:
            raise LatencyBudgetError("ConstrainedEvolution needs latency budgets {device: max_ms}; for an "
                             "unconstrained search use NNI's RegularizedEvolution")
        super().__init__(latency, budgets, devices=devices, seed=seed, patience=patience, log_every=log_every)
        if not (budget_preference >= 0 and np.isfinite(budget_preference)):
            raise ValueError(f"budget_preference must be a finite number >= 0, got {budget_preference}")
        if not 1 <= sample_size <= population_size:
            raise ValueError(f"need 1 <= sample_size <= population_size, got {sample_size} and {population_size}")
        if reward != "constrained" and not isinstance(reward, MnasNetReward):
            raise ValueError(f"reward must be 'constrained' or a MnasNetReward, got {reward!r}")
        self.population_size = population_size
        self.sample_size = sample_size
        self.reward = reward
        self.max_neighbours = max_neighbours
        self.budget_preference = float(budget_preference)
        self._population: Deque[Trial] = collections.deque()

    @property
    def soft(self) -> bool:
        return isinstance(self.reward, MnasNetReward)

    def extra_repr(self) -> str:
        return (f"budgets={self.budgets}, population_size={self.population_size}, "
                f"sample_size={self.sample_size}, reward={self.reward!r}, seed={self.seed}")

    # ------------------------------------------------------------------ fitness and population
    def fitness(self, trial: Trial) -> float:
        assert trial.metric is not None
        if self.soft:
            return self.reward(trial.metric, trial.latency, self.budgets)  # type: ignore[operator]
        return trial.metric

    def on_trial_done(self, trial: Trial) -> None:
        self._population.append(trial)
        if len(self._population) > self.population_size:
            self._population.popleft()

    def _tournament(self) -> Trial:
        members = list(self._population)
        picks = self._random_state.permutation(len(members))[: self.sample_size]
        return max((members[i] for i in picks), key=lambda t: t.fitness)

    # ------------------------------------------------------------------ candidates
    def _random_candidate(self) -> tuple[dict, dict] | None:
        if not self.soft:
            return self.feasible_random()
        for _ in range(self.patience):
            sample = self.random_sample()
            if sample is None:
                break
            ok, lat = self.consider(sample)
            if ok and lat is not None:
                return sample, lat
        _logger.warning("%s: no new valid architecture after %d draws; stopping.", self._name, self.patience)
        return None

    def mutate(self, parent: Trial) -> tuple[dict, dict] | None:
        """A new child of ``parent`` with its latency (see the class docstring), or ``None``."""
        parent_violation = self.violation(parent.latency)
        fallback = None
        feasible: list[tuple[dict, dict]] = []
        for i, child in enumerate(self.neighbours(parent.sample)):
            if self.max_neighbours is not None and i >= self.max_neighbours:
                break
            ok, lat = self.consider(child)
            if not ok or lat is None:
                continue
            if self.soft:
                if parent_violation == 0 or self.violation(lat) < parent_violation:
                    return child, lat
                fallback = fallback or (child, lat)
            elif self.is_feasible(lat):
                if self.budget_preference == 0.0:
                    return child, lat
                feasible.append((child, lat))
            else:
                self.reject(child)
        if feasible:
            util = np.array([max(lat[d] / b for d, b in self.budgets.items()) for _, lat in feasible])
            w = np.exp(self.budget_preference * (util - util.max()))
            return feasible[int(self._random_state.choice(len(feasible), p=w / w.sum()))]
        if fallback is not None:
            return fallback
        return self._multi_mutation(parent) or self._random_candidate()

    def _multi_mutation(self, parent: Trial) -> tuple[dict, dict] | None:
        dims = [(k, m) for k, m in self.search_dimensions().items() if isinstance(m, Categorical)]
        if not dims:
            return None
        prob = 2.0 / len(dims)
        for _ in range(min(self.patience, 200)):
            child = dict(parent.sample)
            for label, mutable in dims:
                if self._random_state.uniform() < prob:
                    child[label] = mutable.values[self._random_state.randint(len(mutable.values))]
            if sample_key(child) == sample_key(parent.sample):
                continue
            ok, lat = self.consider(child)
            if ok and lat is not None and (self.soft or self.is_feasible(lat)):
                return child, lat
            if ok and lat is not None:
                self.reject(child)
        return None

    # ------------------------------------------------------------------ main loop
    def _run(self) -> None:
        _logger.info("%s: spawning the initial population (%d architectures) under budgets %s.",
                     self._name, self.population_size, self.budgets)
        while len(self._population) + len(self._running) < self.population_size:
            if not self.wait_for_resource():
                return
            got = self._random_candidate()
            if got is None:
                return
            self.submit(*got)

        _logger.info("%s: evolving.", self._name)
        while self.wait_for_resource():
            if not self._population:  # every trial so far failed: keep sampling at random
                got = self._random_candidate()
            else:
                got = self.mutate(self._tournament())
            if got is None:
                _logger.warning("%s: cannot find a new architecture to train; stopping.", self._name)
                return
            self.submit(*got)
        self.engine.wait_models()

    # state_dict / load_state_dict: the base class's; loading replays the trained trials through
    # on_trial_done, which rebuilds the population (the most recent population_size of them).
