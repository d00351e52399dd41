"""Per-configuration kernel latencies fitted from whole-network latencies.

Model (all latencies in ms)::

    latency(net) = overhead + sum_c count[net, c] * w[c]
    w[c]         = prior[c] * (1 + u[group(c)]),   prior[c] = theta[family(c)] . basis(c)

Fitting, in two stages, minimises the *relative* squared error (rows weighted by 1/latency):

1. ``theta >= 0`` (the shared cost model of :mod:`.cost_basis`) and ``overhead >= 0`` by bounded
   least squares, with a tiny ridge (``theta_ridge``) that splits collinear terms evenly
   instead of at an arbitrary vertex.
2. Relative corrections ``u`` (bounded so that every ``w >= 0``) by ridge regression
   (``ridge``), one per correction group (:func:`.cost_basis.correction_group`: kernels that
   differ only in resolution and width) or, with ``corrections="config"``, one per
   configuration. Groups let the data correct each kind of kernel while the cost model keeps
   the split between sizes the data cannot separate. ``ridge=None`` skips this stage.

The result is a table ``configuration -> ms`` (:meth:`AdditiveLatencyModel.config_table`)
from which :mod:`.lookup_tree` builds the per-kernel regressors of a package.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

from .configs import Config, ConfigTable
from .cost_basis import FAMILIES, basis, correction_group, family_of


class AdditiveLatencyModel:
    """Additive kernel-latency model fitted to whole-network latencies (scikit-learn style).

    Parameters
    ----------
    ridge:
        Strength of the penalty on the relative corrections ``u`` (stage 2); ``None``: no
        corrections, the cost model alone.
    corrections:
        ``"group"`` (default): one correction per :func:`.cost_basis.correction_group` (kernels
        differing only in resolution and width share it); ``"config"``: one per configuration.
    overhead:
        Fit a per-network constant ``overhead_ms_ >= 0`` (else it is 0).
    theta_ridge:
        Ridge on the (column-normalised) cost-model coefficients of stage 1.
    floor_ms:
        Smallest prior used to scale a configuration's correction (a zero prior would freeze it).

    Attributes (after :meth:`fit`)
    ------------------------------
    configs_:
        The configurations seen in training.
    prior_ms_, config_ms_:
        Prior and fitted latency of each of ``configs_`` (ms), arrays aligned with it.
    theta_:
        ``{family: coefficients}`` of the cost model (ms per basis unit).
    overhead_ms_:
        The per-network constant (ms).
    """

    def __init__(self, *, ridge: float | None = 1.0, corrections: str = "group",
                 overhead: bool = True, theta_ridge: float = 1e-4,
                 floor_ms: float = 1e-4) -> None:
        self.ridge = ridge
        self.corrections = corrections
        self.overhead = overhead
        self.theta_ridge = theta_ridge
        self.floor_ms = floor_ms

    def get_params(self, deep: bool = True) -> dict:
        return {"ridge": self.ridge, "corrections": self.corrections, "overhead": self.overhead,
                "theta_ridge": self.theta_ridge, "floor_ms": self.floor_ms}

    def set_params(self, **params) -> "AdditiveLatencyModel":
        for k, v in params.items():
            if k not in self.get_params():
                raise ValueError(f"AdditiveLatencyModel has no parameter {k!r}")
            setattr(self, k, v)
        return self

    # ------------------------------------------------------------------ cost model
    def prior_ms(self, regressor: str, features) -> float:
        """Latency (ms) the fitted cost model gives one configuration."""
        theta = self.theta_.get(family_of(regressor))
        if theta is None:
            raise KeyError(f"no kernel of the {family_of(regressor)!r} family (regressor "
                           f"{regressor!r}) was seen in training")
        return float(theta @ basis(regressor, features))

    # ------------------------------------------------------------------ fitting
    def fit(self, counters: Sequence[Counter], y: Sequence[float]) -> "AdditiveLatencyModel":
        """Fit to networks given as configuration counters (:func:`.configs.kernel_configs`)
        and their measured latencies ``y`` (ms)."""
        from scipy.optimize import lsq_linear

        y = np.asarray(y, dtype=float)
        if len(counters) != y.size or y.size == 0:
            raise ValueError(f"{len(counters)} networks but {y.size} latencies")
        if np.any(~np.isfinite(y)) or np.any(y <= 0):
            raise ValueError("latencies must be positive finite numbers (ms)")
        table = ConfigTable.from_counters(counters)
        A = table.counts
        sw = 1.0 / y  # relative error

        # Stage 1: shared cost model + overhead.
        fams = sorted({family_of(r) for r, _ in table.configs})
        Phi = {f: np.zeros((len(table.configs), len(FAMILIES[f]))) for f in fams}
        for j, (r, x) in enumerate(table.configs):
            Phi[family_of(r)][j] = basis(r, x)
        cols, slices, offset = [], {}, 0
        for f in fams:
            block = A @ Phi[f]
            cols.append(block)
            slices[f] = slice(offset, offset + block.shape[1])
            offset += block.shape[1]
        if self.overhead:
            cols.append(np.ones((len(y), 1)))
        D = np.hstack(cols) * sw[:, None]
        scale = np.linalg.norm(D, axis=0)
        scale[scale == 0] = 1.0
        Dn = D / scale
        n_par = Dn.shape[1]
        Daug = np.vstack([Dn, np.sqrt(self.theta_ridge) * np.eye(n_par)])
        taug = np.concatenate([y * sw, np.zeros(n_par)])
        sol = lsq_linear(Daug, taug, bounds=(0.0, np.inf), method="bvls").x / scale
        self.theta_ = {f: sol[slices[f]] for f in fams}
        self.overhead_ms_ = float(sol[-1]) if self.overhead else 0.0
        prior = np.array([self.theta_[family_of(r)] @ basis(r, x) for r, x in table.configs])

        # Stage 2: relative corrections, one per configuration or per correction group.
        w = prior.copy()
        if self.ridge is not None:
            pf = np.maximum(prior, self.floor_ms)
            if self.corrections == "group":
                keys = [correction_group(r, x) for r, x in table.configs]
            elif self.corrections == "config":
                keys = list(table.configs)
            else:
                raise ValueError(f"corrections must be 'group' or 'config', got "
                                 f"{self.corrections!r}")
            groups = sorted(set(keys), key=repr)
            G = np.zeros((len(table.configs), len(groups)))
            G[np.arange(len(keys)), [groups.index(k) for k in keys]] = 1.0
            B = ((A * pf[None, :]) @ G) * sw[:, None]
            r = (y - self.overhead_ms_ - A @ prior) * sw
            k = B.shape[1]
            Baug = np.vstack([B, np.sqrt(self.ridge) * np.eye(k)])
            raug = np.concatenate([r, np.zeros(k)])
            # Every member must stay >= 0 ms: the group's bound is its tightest member's.
            lower = np.array([np.max(-prior[G[:, g] > 0] / pf[G[:, g] > 0]) for g in range(k)])
            u = lsq_linear(Baug, raug, bounds=(lower, np.full(k, np.inf)), method="bvls").x
            w = prior + pf * (G @ u)
            self.correction_groups_ = {repr(g): float(v) for g, v in zip(groups, u)}
        self.configs_: list[Config] = table.configs
        self.prior_ms_ = prior
        self.config_ms_ = np.maximum(w, 0.0)
        self._index = {c: j for j, c in enumerate(self.configs_)}
        return self

    # ------------------------------------------------------------------ prediction
    def config_latency(self, config: Config) -> float:
        """Fitted latency (ms) of a configuration; unseen ones get the cost model's value."""
        j = self._index.get(config)
        if j is not None:
            return float(self.config_ms_[j])
        return max(self.prior_ms(*config), 0.0)

    def predict(self, counters: Sequence[Counter]) -> np.ndarray:
        """Predicted latency (ms) of each network (overhead included)."""
        return np.array([self.overhead_ms_ + sum(n * self.config_latency(c) for c, n in cnt.items())
                         for cnt in counters])

    def config_table(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{regressor: (features (n, f), latency_ms (n,))}`` of the seen configurations."""
        out: dict[str, tuple[list, list]] = {}
        for (r, x), ms in zip(self.configs_, self.config_ms_):
            out.setdefault(r, ([], []))
            out[r][0].append(list(x))
            out[r][1].append(float(ms))
        return {r: (np.asarray(X, dtype=float), np.asarray(v)) for r, (X, v) in out.items()}
