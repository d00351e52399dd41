"""Pareto utilities (numpy only): non-dominated sorting, crowding distance, 2-D hypervolume.

All functions take objective matrices ``F`` of shape ``(n_points, n_objectives)`` to be
**minimised** (negate accuracies before passing them).
"""
from __future__ import annotations

import numpy as np

__all__ = ["dominates", "non_dominated_sort", "pareto_mask", "crowding_distance", "hypervolume_2d"]


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``a`` Pareto-dominates ``b`` (no worse in every objective, better in one)."""
    return bool(np.all(a <= b) and np.any(a < b))


def non_dominated_sort(F: np.ndarray) -> list[np.ndarray]:
    """Fronts of ``F`` (lists of row indices), best front first (Deb et al. 2002, O(m n^2))."""
    F = np.asarray(F, dtype=np.float64)
    n = len(F)
    if n == 0:
        return []
    le = np.all(F[:, None, :] <= F[None, :, :], axis=2)
    lt = np.any(F[:, None, :] < F[None, :, :], axis=2)
    dom = le & lt                      # dom[i, j]: i dominates j
    count = dom.sum(axis=0)            # how many dominate j
    fronts = []
    current = np.flatnonzero(count == 0)
    assigned = np.zeros(n, dtype=bool)
    while current.size:
        fronts.append(current)
        assigned[current] = True
        count = count - dom[current].sum(axis=0)
        current = np.flatnonzero((count == 0) & ~assigned)
    return fronts


def pareto_mask(F: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``F`` (duplicates of a front point are all kept)."""
    F = np.asarray(F, dtype=np.float64)
    if len(F) == 0:
        return np.zeros(0, dtype=bool)
    le = np.all(F[:, None, :] <= F[None, :, :], axis=2)
    lt = np.any(F[:, None, :] < F[None, :, :], axis=2)
    return ~np.any(le & lt, axis=0)


def crowding_distance(F: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of each row of one front; boundary points get ``inf``."""
    F = np.asarray(F, dtype=np.float64)
    n, m = F.shape if F.ndim == 2 else (len(F), 0)
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for k in range(m):
        order = np.argsort(F[:, k], kind="stable")
        span = F[order[-1], k] - F[order[0], k]
        dist[order[0]] = dist[order[-1]] = np.inf
        if span <= 0:
            continue
        dist[order[1:-1]] += (F[order[2:], k] - F[order[:-2], k]) / span
    return dist


def hypervolume_2d(F: np.ndarray, ref: np.ndarray | tuple[float, float]) -> float:
    """Area dominated by the points of ``F`` (n, 2) and bounded by the reference point ``ref``
    (both objectives minimised). Points not strictly better than ``ref`` in both objectives add
    nothing."""
    F = np.asarray(F, dtype=np.float64).reshape(-1, 2)
    ref = np.asarray(ref, dtype=np.float64)
    F = F[np.all(F < ref, axis=1)]
    if len(F) == 0:
        return 0.0
    F = F[np.lexsort((F[:, 1], F[:, 0]))]  # by first objective, then second
    area = 0.0
    best_y = ref[1]
    for x, y in F:
        if y < best_y:
            # the strip from x to ref[0] gains height (best_y - y)
            area += (ref[0] - x) * (best_y - y)
            best_y = y
    return float(area)
