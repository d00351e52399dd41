"""Per-kernel regressors from a fitted configuration table.

:func:`lookup_tree` builds one regression tree per kernel type that returns the fitted latency
of every configuration seen in training exactly, and, between them (still inside the range of
the seen features), the cost model's latency at a set of filler points sampled in that range,
so an unseen configuration gets a value from a physically sensible neighbour rather than from
whichever seen configuration a split happens to send it to.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..regressors.forest import TreeEnsemble


def _conv_row(hw: float, cin: float, cout: float, k: float, s: float, dw: bool) -> list[float]:
    params = cout * (k * k + 1) if dw else cout * (k * k * cin + 1)
    flops = 2 * (hw / s) * (hw / s) * params
    return [hw, cin, cout, k, s, flops / 2e6, params / 1e6]


def sample_in_range(regressor: str, X_seen: np.ndarray, n: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Up to ``n`` feature vectors of ``regressor`` whose free dimensions (spatial size,
    channels) are drawn uniformly as integers within the seen range, whose categorical ones
    (kernel size, stride) are drawn from the seen values, whose derived ones (FLOPs,
    parameters) are computed, and which all lie inside the seen feature box."""
    X_seen = np.asarray(X_seen, dtype=float)
    lo, hi = X_seen.min(axis=0), X_seen.max(axis=0)

    def ints(j: int, size: int) -> np.ndarray:
        return rng.integers(int(np.ceil(lo[j])), int(np.floor(hi[j])) + 1, size=size).astype(float)

    def seen(j: int, size: int) -> np.ndarray:
        return rng.choice(np.unique(X_seen[:, j]), size=size)

    m = 4 * n
    if regressor in ("conv-bn-relu", "dwconv-bn-relu"):
        dw = regressor.startswith("dw")
        hw, cin, cout, k, s = ints(0, m), ints(1, m), ints(2, m), seen(3, m), seen(4, m)
        if dw:
            cout = cin
        rows = np.array([_conv_row(*v, dw=dw) for v in zip(hw, cin, cout, k, s)])
    elif regressor == "fc":
        cin, cout = ints(0, m), ints(1, m)
        flop = (2 * cin + 1) * cout
        rows = np.stack([cin, cout, flop / 2e6, flop / 1e6], axis=1)
    elif regressor in ("avgpool", "maxpool"):
        hw, cin, k, s = ints(0, m), ints(1, m), seen(3, m), seen(4, m)
        rows = np.stack([hw, cin, cin, k, s], axis=1)
    elif regressor in ("add", "addrelu") and X_seen.shape[1] == 3:
        hw, c = ints(0, m), ints(1, m)
        same = np.all(X_seen[:, 1] == X_seen[:, 2])
        c2 = c if same else ints(2, m)
        rows = np.stack([hw, c, c2], axis=1)
    else:
        rows = np.stack([ints(j, m) for j in range(X_seen.shape[1])], axis=1)
    tol = 1e-9 * np.maximum(1.0, np.abs(hi))
    inside = np.all((rows >= lo - tol) & (rows <= hi + tol), axis=1)
    rows = np.unique(rows[inside], axis=0)
    known = {tuple(r) for r in X_seen}
    rows = np.array([r for r in rows if tuple(r) not in known]).reshape(-1, X_seen.shape[1])
    if len(rows) > n:
        rows = rows[rng.choice(len(rows), size=n, replace=False)]
    return rows


#: Feature range recorded for a regressor that saw no training kernel: nothing lies inside it,
#: so the engine flags every such kernel ``in_domain=False``.
EMPTY_RANGE_BOUND = 1e300


def empty_feature_range(n_features: int) -> dict[str, list[float]]:
    return {"min": [EMPTY_RANGE_BOUND] * n_features, "max": [-EMPTY_RANGE_BOUND] * n_features}


def _loguniform_int(rng: np.random.Generator, lo: int, hi: int, size: int) -> np.ndarray:
    return np.round(np.exp(rng.uniform(np.log(lo), np.log(hi), size=size))).astype(float)


def sample_broad(regressor: str, n: int, rng: np.random.Generator) -> np.ndarray | None:
    """``n`` feature vectors of ``regressor`` spread over what mobile CNNs use (spatial size
    1-224, channels 1-1024, log-uniform), or None for a regressor this cannot sample."""
    hw = _loguniform_int(rng, 1, 224, n)
    c = _loguniform_int(rng, 1, 1024, n)
    if regressor == "dwconv-bn-relu":
        k, s = rng.choice([3, 5, 7], size=n), rng.choice([1, 2], size=n)
        return np.array([_conv_row(*v, dw=True) for v in zip(hw, c, c, k, s)])
    if regressor == "maxpool":
        k, s = rng.choice([2, 3], size=n), rng.choice([1, 2], size=n)
        return np.stack([hw, c, c, k, s], axis=1).astype(float)
    if regressor in ("bn", "hswish", "channelshuffle", "split", "se"):
        return np.stack([hw, c], axis=1)
    if regressor == "concat":
        m = rng.integers(2, 5, size=n)
        cs = np.stack([_loguniform_int(rng, 1, 512, n) for _ in range(4)], axis=1)
        cs[np.arange(4)[None, :] >= m[:, None]] = 0
        return np.column_stack([hw, m, cs]).astype(float)
    return None


def extrapolation_tree(regressor: str, cost: Callable[[np.ndarray], np.ndarray], *,
                       n: int = 256, seed: int = 0, meta: dict | None = None
                       ) -> TreeEnsemble | None:
    """A tree (on log latency) approximating ``cost`` over :func:`sample_broad`'s range, for a
    kernel type no training network held. Its values are the fitted cost model's guesses, not
    calibrated: packages pair it with :func:`empty_feature_range`. None if the type cannot be
    sampled."""
    from sklearn.tree import DecisionTreeRegressor

    rng = np.random.default_rng(seed)
    X = sample_broad(regressor, n, rng)
    if X is None:
        return None
    y = np.maximum(np.asarray(cost(X), dtype=float), 1e-6)
    tree = DecisionTreeRegressor(min_samples_leaf=2, random_state=seed).fit(X, np.log(y))
    info = dict(meta or {})
    info.update({"kind": "uncalibrated cost-model extrapolation", "n_points": int(n)})
    return TreeEnsemble.from_sklearn(tree, target_transform="log", meta=info)


def lookup_tree(regressor: str, X_seen: np.ndarray, y_seen: np.ndarray,
                fill: Callable[[np.ndarray], np.ndarray] | None = None, *, n_fill: int = 128,
                seed: int = 0, meta: dict | None = None) -> TreeEnsemble:
    """A single-tree :class:`TreeEnsemble` that returns ``y_seen`` (ms) exactly for every row
    of ``X_seen`` and ``fill(X)`` at up to ``n_fill`` filler points inside their range
    (``fill=None``: no fillers, a plain lookup tree)."""
    from sklearn.tree import DecisionTreeRegressor

    X_seen = np.asarray(X_seen, dtype=float)
    y_seen = np.asarray(y_seen, dtype=float)
    X, y = X_seen, y_seen
    n_filled = 0
    if fill is not None and n_fill > 0:
        Xf = sample_in_range(regressor, X_seen, n_fill, np.random.default_rng(seed))
        if len(Xf):
            X = np.vstack([X_seen, Xf])
            y = np.concatenate([y_seen, np.asarray(fill(Xf), dtype=float)])
            n_filled = len(Xf)
    tree = DecisionTreeRegressor(random_state=seed).fit(X, y)
    info = dict(meta or {})
    info.update({"kind": "configuration lookup tree", "n_seen_configurations": int(len(X_seen)),
                 "n_filler_points": n_filled})
    ens = TreeEnsemble.from_sklearn(tree, meta=info)
    got = ens.predict(X_seen)
    if not np.allclose(got, y_seen, rtol=1e-9, atol=1e-12):
        worst = int(np.argmax(np.abs(got - y_seen)))
        raise RuntimeError(f"lookup tree for {regressor!r} does not reproduce configuration "
                           f"{X_seen[worst].tolist()} ({got[worst]} ms vs {y_seen[worst]} ms); "
                           "two seen configurations are equal in float32")
    return ens
