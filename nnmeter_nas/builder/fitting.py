"""Fit one tree-ensemble regressor per kernel type and pick the best by validation error.

Candidates (scikit-learn estimators, converted to :class:`~nnmeter_nas.regressors.TreeEnsemble`):

- ``rf``: a random forest on latency (ms), as nn-Meter fits its kernel predictors;
- ``rf-log``, ``et-log``, ``gbm-log``: random forest, extra trees and gradient boosting on
  ``log(latency_ms)``; latencies span four orders of magnitude, and on a log scale the error
  of a tree is a relative error, which is what the accuracy targets count;
- ``gbm-log-d1``, ``gbm-log-d2``: boosted stumps / depth-2 trees on ``log(latency_ms)``,
  close to additive in the features, which suits latencies that are products of sizes.

Each candidate is scored by K-fold cross-validation on the kernel's measurements
(out-of-fold predictions); the one with the lowest latency-weighted RMSPE is refit on all of
them. Weighting each relative error by the kernel's latency counts errors as a network's
total feels them: a 50% error on a 5 us kernel matters less than 10% on a 1 ms one, while
plain RMSPE ranks them the other way. The chosen
model's validation figures, the range of its training features and the out-of-fold errors
(which drive adaptive sampling) are returned with it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..regressors import TreeEnsemble


def relative_errors(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    y_true = np.asarray(y_true, dtype=float)
    return (np.asarray(y_pred, dtype=float) - y_true) / y_true


def error_summary(y_true: Sequence[float], y_pred: Sequence[float]) -> dict[str, float]:
    """RMSPE, latency-weighted RMSPE, MAPE (fractions, not %), share within +-5% / +-10%,
    and the count."""
    y = np.asarray(y_true, dtype=float)
    rel = relative_errors(y, np.asarray(y_pred))
    if rel.size == 0:
        return {"n": 0}
    return {"n": int(rel.size), "rmspe": float(np.sqrt(np.mean(rel ** 2))),
            "rmspe_weighted": float(np.sqrt(np.sum(y * rel ** 2) / np.sum(y))),
            "mape": float(np.mean(np.abs(rel))),
            "within_5pct": float(np.mean(np.abs(rel) <= 0.05)),
            "within_10pct": float(np.mean(np.abs(rel) <= 0.10))}


@dataclass
class Candidate:
    """A regressor family: ``make(n_samples, seed)`` returns an unfitted estimator."""

    name: str
    make: Callable[[int, int], Any]
    log_target: bool


def _rf(n: int, seed: int, log: bool):
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(n_estimators=60, max_depth=None if log else 40,
                                 min_samples_leaf=1 if n < 400 else 2, max_features=1.0,
                                 random_state=seed, n_jobs=1)


def _et(n: int, seed: int):
    from sklearn.ensemble import ExtraTreesRegressor

    return ExtraTreesRegressor(n_estimators=80, min_samples_leaf=1 if n < 400 else 2,
                               max_features=1.0, random_state=seed, n_jobs=1)


def _gbm(n: int, seed: int):
    from sklearn.ensemble import GradientBoostingRegressor

    return GradientBoostingRegressor(n_estimators=400 if n >= 300 else 200, learning_rate=0.05,
                                     max_depth=5 if n >= 300 else 3, subsample=0.8,
                                     min_samples_leaf=2, random_state=seed)


def _gbm_shallow(depth: int, n_trees: int):
    def make(n: int, seed: int):
        from sklearn.ensemble import GradientBoostingRegressor

        return GradientBoostingRegressor(n_estimators=n_trees, learning_rate=0.1,
                                         max_depth=depth, subsample=0.8, min_samples_leaf=2,
                                         random_state=seed)
    return make


CANDIDATES: dict[str, Candidate] = {
    "rf": Candidate("rf", lambda n, s: _rf(n, s, False), False),
    "rf-log": Candidate("rf-log", lambda n, s: _rf(n, s, True), True),
    "et-log": Candidate("et-log", _et, True),
    "gbm-log": Candidate("gbm-log", _gbm, True),
    # Boosted stumps / depth-2 trees on log-latency are (nearly) additive in the features:
    # log(latency) ~ f(hw) + g(cin) + ..., the shape of latency ~ hw^2 * cin * ..., which
    # deep trees only approximate with many more samples.
    "gbm-log-d1": Candidate("gbm-log-d1", _gbm_shallow(1, 800), True),
    "gbm-log-d2": Candidate("gbm-log-d2", _gbm_shallow(2, 600), True),
}

DEFAULT_CANDIDATES = ("rf", "et-log", "gbm-log", "gbm-log-d1", "gbm-log-d2")


@dataclass
class KernelFit:
    """The chosen regressor of one kernel type and how well it validated."""

    regressor: str
    ensemble: TreeEnsemble
    model: str
    validation: dict[str, Any]
    feature_range: dict[str, list[float]]
    n_train: int
    oof_relative_error: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    candidates: dict[str, dict[str, float]] = field(default_factory=dict)

    def info(self) -> dict[str, Any]:
        """Manifest entry (``kernel_info``) of this regressor."""
        return {"feature_range": self.feature_range, "n_train": self.n_train,
                "validation": {**self.validation, "model": self.model,
                               "candidates": self.candidates}}


def _folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    idx = np.random.default_rng(seed).permutation(n)
    return [idx[i::k] for i in range(k)]


def cross_val_predict(cand: Candidate, X: np.ndarray, y: np.ndarray, *, k: int,
                      seed: int) -> np.ndarray:
    """Out-of-fold predictions (ms) of ``cand`` with ``k`` folds."""
    pred = np.empty_like(y)
    for fold in _folds(len(y), k, seed):
        train = np.setdiff1d(np.arange(len(y)), fold)
        est = cand.make(len(train), seed)
        target = np.log(y[train]) if cand.log_target else y[train]
        est.fit(X[train], target)
        p = est.predict(X[fold])
        pred[fold] = np.exp(p) if cand.log_target else p
    return np.maximum(pred, 1e-9)


def fit_kernel(regressor: str, X: Sequence[Sequence[float]], y: Sequence[float], *,
               candidates: Sequence[str] = DEFAULT_CANDIDATES,
               folds: int = 5, seed: int = 0, max_bytes: int | None = 2_000_000,
               meta: Mapping[str, Any] | None = None) -> KernelFit:
    """Fit the regressor of one kernel type.

    ``X`` are feature vectors (the engine's, in its order), ``y`` latencies (ms, > 0).
    ``max_bytes`` bounds the size of the stored ensemble: a bigger one is refit with fewer
    trees (halving) until it fits.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"fit_kernel({regressor!r}): X has shape {X.shape}, y has {y.shape}")
    if len(y) < 4:
        raise ValueError(f"fit_kernel({regressor!r}): {len(y)} measurements; need at least 4")
    if np.any(~np.isfinite(y)) or np.any(y <= 0):
        raise ValueError(f"fit_kernel({regressor!r}): latencies must be finite and > 0")
    unknown = [c for c in candidates if c not in CANDIDATES]
    if unknown:
        raise ValueError(f"unknown regressor candidates {unknown}; known: {sorted(CANDIDATES)}")
    k = int(max(2, min(folds, len(y) // 3)))
    scores: dict[str, dict[str, float]] = {}
    oof: dict[str, np.ndarray] = {}
    for name in candidates:
        pred = cross_val_predict(CANDIDATES[name], X, y, k=k, seed=seed)
        oof[name] = relative_errors(y, pred)
        scores[name] = error_summary(y, pred)
    best = min(candidates, key=lambda c: (scores[c]["rmspe_weighted"], c))
    cand = CANDIDATES[best]
    est = cand.make(len(y), seed)
    est.fit(X, np.log(y) if cand.log_target else y)
    transform = "log" if cand.log_target else "identity"
    info = {"regressor": regressor, "model": best, "n_train": int(len(y)), **dict(meta or {})}
    ens = TreeEnsemble.from_sklearn(est, target_transform=transform, meta=info)
    while max_bytes is not None and len(ens.to_npz_bytes()) > max_bytes and \
            hasattr(est, "n_estimators") and est.n_estimators > 4:
        est.set_params(n_estimators=max(4, est.n_estimators // 2))
        est.fit(X, np.log(y) if cand.log_target else y)
        ens = TreeEnsemble.from_sklearn(est, target_transform=transform,
                                        meta={**info, "pruned_to_trees": est.n_estimators})
    validation = {**scores[best], "folds": k, "method": "k-fold cross-validation, "
                  "out-of-fold predictions"}
    return KernelFit(regressor=regressor, ensemble=ens, model=best, validation=validation,
                     feature_range={"min": X.min(axis=0).tolist(), "max": X.max(axis=0).tolist()},
                     n_train=int(len(y)), oof_relative_error=oof[best], candidates=scores)


def fit_flops_baseline(flops: Sequence[float], latency_ms: Sequence[float]) -> dict[str, float]:
    """Least-squares line ``latency_ms = a * flops + b`` (FLOPs-only baseline)."""
    f = np.asarray(flops, dtype=float)
    y = np.asarray(latency_ms, dtype=float)
    A = np.stack([f, np.ones_like(f)], axis=1)
    (a, b), *_ = np.linalg.lstsq(A, y, rcond=None)
    return {"ms_per_flop": float(a), "intercept_ms": float(b), "n": int(len(y))}


def kernel_flops(regressor: str, features: Sequence[float]) -> float:
    """Multiply-add FLOPs (x2) of a kernel from its engine features (convolutions and fully
    connected layers; 0 for the rest, as FLOPs counts usually do)."""
    if regressor in ("conv-bn-relu", "dwconv-bn-relu"):
        return float(features[5]) * 2e6
    if regressor == "fc":
        return float(features[2]) * 2e6
    return 0.0


def nan_to_none(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}
