"""Rewards that fold latency budgets into the value an evolution maximises (no NNI import)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

__all__ = ["MnasNetReward"]


@dataclass(frozen=True)
class MnasNetReward:
    """MnasNet's soft latency constraint (Tan et al., CVPR 2019)::

        reward = metric * prod_d (latency_d / target_d) ** w_d
        w_d = alpha if latency_d <= target_d else beta

    ``alpha`` applies under the target, ``beta`` over it. MnasNet's soft setting is
    ``alpha = beta = -0.07`` (the default); its hard-ish setting is ``alpha = 0, beta = -1``
    (:meth:`hard`). Latencies and targets in ms; the metric is used as given (e.g. accuracy in %).

    Parameters
    ----------
    alpha : float, default=-0.07
        Exponent under the target.
    beta : float, default=-0.07
        Exponent over the target.

    Examples
    --------
    >>> from nnmeter_nas.strategies import MnasNetReward
    >>> reward = MnasNetReward()
    >>> reward(75.0, {"a76": 10.0}, targets={"a76": 10.0})       # on target: the metric
    75.0
    >>> round(reward(75.0, {"a76": 20.0}, targets={"a76": 10.0}), 2)  # twice as slow
    71.45
    >>> MnasNetReward.hard()(75.0, {"a76": 20.0}, targets={"a76": 10.0})
    37.5
    """

    alpha: float = -0.07
    beta: float = -0.07

    def __post_init__(self) -> None:
        if not (math.isfinite(self.alpha) and math.isfinite(self.beta)):
            raise ValueError(f"MnasNetReward exponents must be finite, got alpha={self.alpha}, beta={self.beta}")

    @classmethod
    def hard(cls) -> "MnasNetReward":
        """``alpha = 0, beta = -1``: no reward for being faster, a steep penalty for being slower."""
        return cls(alpha=0.0, beta=-1.0)

    def __call__(self, metric: float, latency: Mapping[str, float], targets: Mapping[str, float]) -> float:
        factor = 1.0
        for device, target in targets.items():
            ratio = latency[device] / target
            if ratio <= 0:
                continue  # a zero latency carries no information about the target
            factor *= ratio ** (self.alpha if ratio <= 1.0 else self.beta)
        return metric * factor
