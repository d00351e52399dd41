"""Kernel cost models that extrapolate by construction, stored as flat arrays.

A :class:`KernelCostModel` predicts one kernel type's latency (ms) as a non-negative sum of
cost terms, each a monomial with non-negative exponents in non-negative *quantities* derived
from the feature row (output area, channels, MACs, elements moved, parameters...)::

    latency(x) = sum_j coef[j] * gate_j(x) * prod_i q_i(x) ** exponents[j, i]

with ``coef >= 0``, ``exponents >= 0`` and ``gate_j(x) = 1`` when feature ``gate_feature[j]``
lies in ``[gate_lo[j], gate_hi[j]]`` (always 1 for ``gate_feature[j] == -1``), else 0. Gates
select terms by discrete shape (kernel size), never by size. Written as work / throughput: the
``MACs`` term is compute at peak throughput, ``MACs / cin`` and ``MACs / cout`` terms add the
lost efficiency of thin layers (throughput ``T(c) = T_max * c / (c + c0)``, a bounded,
monotone, saturating function of the shape), the element and parameter terms memory traffic
over bandwidth, the constant a launch cost. Hence, by construction:

- latency never decreases when a kernel grows (more pixels or channels at the same kernel
  size and stride): every quantity is non-decreasing in them and every term non-negative;
- no plateau: every non-constant term grows at least linearly with the output area, so far
  outside the data, doubling the work of a layer by doubling its area doubles its latency up to
  the constant launch cost;
- a kernel's latency depends on that kernel alone, so network = sum of kernels and lookup
  tables built from it stay exact.

An optional bounded multiplicative correction (``corr_rows`` / ``corr_factor``, factors within
``[1 / corr_bound, corr_bound]``) applies only to rows equal to one of the measured
configurations it was fitted on: the fit's residual where the data pin it down, nothing
elsewhere.

**Domain.** A cost model is calibrated where its cost terms are: ``in_domain(x)`` is True when
every term active at ``x`` takes a value within the range that term took over the measured
configurations of this kernel type (a gated term: over those where its gate was on; a gate
class no measured configuration opened is never in domain), and each discrete shape feature
(:data:`DISCRETE_FEATURES`: kernel size, stride, number of inputs) lies within its measured
range. The prediction is then the fitted sum at term values the fit saw, an interpolation;
outside, the terms extrapolate it (flagged). This is the model's own notion of "seen", not a
box on the raw features: a box can hold a corner no measured kernel came near (the largest
map with the most channels: four times the elements of any measured channel shuffle), and can
exclude a kernel whose every term was measured (a channel shuffle on a smaller map with more
channels, the same elements). The domain is stored with the model (:meth:`set_domain`).

Quantities per regressor are registered in :data:`QUANTITIES` (``register_quantities`` adds a
kernel type); the model stores only the regressor name, so the file holds no code.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

FORMAT = "nnmeter-nas-kernel-cost-model"
FORMAT_VERSION = 1

QuantityFn = Callable[[np.ndarray], np.ndarray]

#: regressor -> (quantity names, function feature rows (n, f) -> quantities (n, p)).
#: Every quantity must be >= 0 and non-decreasing in the kernel's size (area, channels).
QUANTITIES: dict[str, tuple[tuple[str, ...], QuantityFn]] = {}


def register_quantities(regressor: str, names: Sequence[str], fn: QuantityFn) -> None:
    """Declare the quantities the cost terms of ``regressor`` are built from (nnmeter-nas-1
    rows; nnmeter-nas-2/3 rows start with the same columns)."""
    QUANTITIES[regressor] = (tuple(names), fn)


def _conv_q(X: np.ndarray) -> np.ndarray:
    hw, cin, cout, k, s, macs, params = (X[:, i] for i in range(7))
    ho = hw / np.maximum(s, 1.0)
    return np.stack([ho * ho, hw * hw, cin, cout, k * k, macs, params], axis=1)


_CONV_NAMES = ("area_out", "area_in", "cin", "cout", "k2", "macs_1e6", "params_1e6")


def _fc_q(X: np.ndarray) -> np.ndarray:
    return np.stack([X[:, 0], X[:, 1], X[:, 2]], axis=1)


def _pool_q(X: np.ndarray) -> np.ndarray:
    hw, cin, cout, k, s = (X[:, i] for i in range(5))
    ho = hw / np.maximum(s, 1.0)
    return np.stack([ho * ho, hw * hw, cin, cout, k * k], axis=1)


def _add_q(X: np.ndarray) -> np.ndarray:
    hw = X[:, 0]
    return np.stack([hw * hw, np.maximum(X[:, 1], X[:, 2]), X[:, 1] + X[:, 2]], axis=1)


def _concat_q(X: np.ndarray) -> np.ndarray:
    hw = X[:, 0]
    return np.stack([hw * hw, X[:, 2:6].sum(axis=1), X[:, 1]], axis=1)


def _generic_q(X: np.ndarray) -> np.ndarray:
    hw = X[:, 0]
    return np.stack([hw * hw, X[:, 1]], axis=1)


for _r in ("conv-bn-relu", "dwconv-bn-relu"):
    register_quantities(_r, _CONV_NAMES, _conv_q)
register_quantities("fc", ("cin", "cout", "macs_1e6"), _fc_q)
for _r in ("avgpool", "maxpool"):
    register_quantities(_r, ("area_out", "area_in", "cin", "cout", "k2"), _pool_q)
for _r in ("add", "addrelu"):
    register_quantities(_r, ("area", "c", "c_sum"), _add_q)
register_quantities("concat", ("area", "c_total", "n_inputs"), _concat_q)
GENERIC_QUANTITY_NAMES = ("area", "c")


#: Feature columns of a kernel type that select its shape class rather than its size (kernel
#: size and stride of convolutions and poolings, the number of inputs of a concatenation):
#: :meth:`KernelCostModel.in_domain` keeps each within its measured range.
DISCRETE_FEATURES: dict[str, tuple[int, ...]] = {
    "conv-bn-relu": (3, 4), "dwconv-bn-relu": (3, 4), "avgpool": (3, 4), "maxpool": (3, 4),
    "concat": (1,)}


def quantities(regressor: str, X: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
    """Names and values (``(n, p)``, all >= 0) of ``regressor``'s quantities for rows ``X``;
    kernel types without a registration get ``[hw * hw, c]`` from their ``[hw, c]`` row."""
    names, fn = QUANTITIES.get(regressor, (GENERIC_QUANTITY_NAMES, _generic_q))
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[None, :]
    return names, np.maximum(fn(X), 0.0)


def _row_keys(X: np.ndarray) -> list[bytes]:
    return [r.tobytes() for r in np.ascontiguousarray(np.asarray(X, dtype=np.float32))]


@dataclass
class KernelCostModel:
    """Non-negative sum of monomial cost terms of one kernel type (see the module docstring).

    Parameters
    ----------
    regressor : str
        Kernel regressor name; selects the quantities (:data:`QUANTITIES`).
    n_features : int
        Length of each feature row.
    coef : ndarray of shape (m,)
        Term coefficients, ms per unit of the monomial, all >= 0.
    exponents : ndarray of shape (m, p)
        Exponent of each quantity in each term, all >= 0.
    gate_feature, gate_lo, gate_hi : ndarray of shape (m,)
        Term ``j`` counts when ``gate_lo[j] <= x[gate_feature[j]] <= gate_hi[j]``;
        ``gate_feature[j] == -1``: always.
    corr_rows : ndarray of shape (c, n_features), default=empty
        Measured configurations with a fitted correction.
    corr_factor : ndarray of shape (c,), default=empty
        Multiplicative correction of each of ``corr_rows``, within
        ``[1 / corr_bound, corr_bound]``.
    corr_bound : float, default=1.5
    term_names : list of str, default=[]
        Human-readable name of each term (stored, not used).
    meta : dict, default={}
        Free JSON-serialisable information.
    domain : dict or None, default=None
        Where the model is calibrated (:meth:`set_domain`): ``term_lo``, ``term_hi`` (per term;
        None where no measured configuration opened the term's gate), ``feature_lo``,
        ``feature_hi`` (per feature; None for unconstrained columns). None: unknown
        (:meth:`in_domain` returns None).
    """

    regressor: str
    n_features: int
    coef: np.ndarray
    exponents: np.ndarray
    gate_feature: np.ndarray
    gate_lo: np.ndarray
    gate_hi: np.ndarray
    corr_rows: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    corr_factor: np.ndarray = field(default_factory=lambda: np.zeros(0))
    corr_bound: float = 1.5
    term_names: list = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    domain: dict | None = None

    def __post_init__(self) -> None:
        self.n_features = int(self.n_features)
        self.coef = np.ascontiguousarray(self.coef, dtype=np.float64).reshape(-1)
        m = self.coef.size
        names, _ = QUANTITIES.get(self.regressor, (GENERIC_QUANTITY_NAMES, None))
        self.exponents = np.ascontiguousarray(self.exponents, dtype=np.float64).reshape(m, -1)
        self.gate_feature = np.ascontiguousarray(self.gate_feature, dtype=np.int32).reshape(m)
        self.gate_lo = np.ascontiguousarray(self.gate_lo, dtype=np.float64).reshape(m)
        self.gate_hi = np.ascontiguousarray(self.gate_hi, dtype=np.float64).reshape(m)
        self.corr_rows = np.asarray(self.corr_rows, dtype=np.float64).reshape(
            -1, self.n_features)
        self.corr_factor = np.asarray(self.corr_factor, dtype=np.float64).reshape(-1)
        self.corr_bound = float(self.corr_bound)
        if m == 0:
            raise ValueError(f"KernelCostModel({self.regressor!r}): no cost terms")
        if self.exponents.shape[1] != len(names):
            raise ValueError(f"KernelCostModel({self.regressor!r}): exponents have "
                             f"{self.exponents.shape[1]} columns, the regressor has "
                             f"{len(names)} quantities {list(names)}")
        if not (np.all(np.isfinite(self.coef)) and np.all(self.coef >= 0)):
            raise ValueError(f"KernelCostModel({self.regressor!r}): coefficients must be "
                             "finite and >= 0 (a negative term could make a larger kernel "
                             "faster)")
        if not (np.all(np.isfinite(self.exponents)) and np.all(self.exponents >= 0)):
            raise ValueError(f"KernelCostModel({self.regressor!r}): exponents must be >= 0")
        if np.any(self.gate_feature >= self.n_features) or np.any(self.gate_feature < -1):
            raise ValueError(f"KernelCostModel({self.regressor!r}): a gate tests a feature "
                             f"outside [0, {self.n_features})")
        if self.corr_rows.shape[0] != self.corr_factor.size:
            raise ValueError(f"KernelCostModel({self.regressor!r}): {self.corr_rows.shape[0]} "
                             f"correction rows but {self.corr_factor.size} factors")
        if self.corr_bound < 1 or np.any(self.corr_factor < 1 / self.corr_bound - 1e-12) or \
                np.any(self.corr_factor > self.corr_bound + 1e-12):
            raise ValueError(f"KernelCostModel({self.regressor!r}): correction factors must "
                             f"lie in [1/{self.corr_bound:g}, {self.corr_bound:g}]")
        self._corr = dict(zip(_row_keys(self.corr_rows), self.corr_factor.tolist()))

    @property
    def n_terms(self) -> int:
        return int(self.coef.size)

    # ------------------------------------------------------------------ prediction
    def terms(self, X: np.ndarray) -> np.ndarray:
        """Value of each cost term (without its coefficient) per row, shape ``(n, m)``."""
        X = self._check_X(X)
        _, Q = quantities(self.regressor, X)
        with np.errstate(divide="ignore"):
            logq = np.log(Q)
        # 0 ** 0 = 1; 0 ** e = 0 for e > 0 (log 0 = -inf, exp(-inf) = 0, but 0 * -inf = nan).
        T = np.exp(np.where(self.exponents[None, :, :] == 0, 0.0,
                            self.exponents[None, :, :] * logq[:, None, :]).sum(axis=2))
        gf = self.gate_feature
        on = gf < 0
        if not np.all(on):
            vals = X[:, np.maximum(gf, 0)]
            on = on[None, :] | ((vals >= self.gate_lo[None, :]) & (vals <= self.gate_hi[None, :]))
        else:
            on = np.ones_like(T, dtype=bool)
        return np.where(on, T, 0.0)

    def predict_uncorrected(self, X: np.ndarray) -> np.ndarray:
        """Latency (ms) of the cost terms alone (no in-range correction), shape ``(n,)``."""
        return self.terms(X) @ self.coef

    def correction(self, X: np.ndarray) -> np.ndarray:
        """The multiplicative correction of each row (1 for rows not among ``corr_rows``)."""
        X = self._check_X(X)
        if not self._corr:
            return np.ones(X.shape[0])
        return np.array([self._corr.get(k, 1.0) for k in _row_keys(X)])

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted latency (ms) for each row of ``X`` (shape ``(n_rows, n_features)``)."""
        return self.predict_uncorrected(X) * self.correction(X)

    def set_domain(self, X: np.ndarray) -> "KernelCostModel":
        """Record the domain of the measured configurations ``X`` (rows of this kernel type;
        empty: never in domain). Returns ``self``."""
        X = np.asarray(X, dtype=np.float64).reshape(-1, self.n_features)
        m = self.n_terms
        lo: list = [None] * m
        hi: list = [None] * m
        if len(X):
            T, on = self.terms(X), self._gates(X)
            for j in range(m):
                if on[:, j].any():
                    lo[j], hi[j] = float(T[on[:, j], j].min()), float(T[on[:, j], j].max())
        flo: list = [None] * self.n_features
        fhi: list = [None] * self.n_features
        for i in DISCRETE_FEATURES.get(self.regressor, ()):
            if i < self.n_features:
                flo[i], fhi[i] = ((float(X[:, i].min()), float(X[:, i].max())) if len(X)
                                  else (1.0, 0.0))
        self.domain = {"term_lo": lo, "term_hi": hi, "feature_lo": flo, "feature_hi": fhi,
                       "n_configurations": int(len(X))}
        return self

    def in_domain(self, X: np.ndarray) -> np.ndarray | None:
        """True per row where the model is calibrated (see the module docstring), None
        without a recorded domain."""
        if self.domain is None:
            return None
        X = self._check_X(X)
        d = self.domain
        T, on = self.terms(X), self._gates(X)
        ok = np.ones(X.shape[0], dtype=bool)
        if not d.get("n_configurations", 1):
            return ~ok
        for j, (lo, hi) in enumerate(zip(d["term_lo"], d["term_hi"])):
            if lo is None:  # a gate class never measured: out wherever it opens
                ok &= ~on[:, j]
                continue
            tol = 1e-9 * max(1.0, abs(hi))
            ok &= ~on[:, j] | ((T[:, j] >= lo - tol) & (T[:, j] <= hi + tol))
        for i, (lo, hi) in enumerate(zip(d["feature_lo"], d["feature_hi"])):
            if lo is not None:
                tol = 1e-9 * max(1.0, abs(hi))
                ok &= (X[:, i] >= lo - tol) & (X[:, i] <= hi + tol)
        return ok

    def _gates(self, X: np.ndarray) -> np.ndarray:
        gf = self.gate_feature
        vals = X[:, np.maximum(gf, 0)]
        return (gf < 0)[None, :] | ((vals >= self.gate_lo[None, :]) &
                                    (vals <= self.gate_hi[None, :]))

    def _check_X(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"KernelCostModel({self.regressor!r}) expects rows of "
                             f"{self.n_features} features, got an array of shape {X.shape}")
        return X

    # ------------------------------------------------------------------ storage
    def to_npz_bytes(self) -> bytes:
        """Serialise to ``.npz`` bytes (no pickle; ``allow_pickle=False`` loads it)."""
        header = {"format": FORMAT, "format_version": FORMAT_VERSION,
                  "regressor": self.regressor, "n_features": self.n_features,
                  "corr_bound": self.corr_bound, "term_names": list(self.term_names),
                  "meta": self.meta, "domain": self.domain}
        buf = io.BytesIO()
        np.savez_compressed(buf, coef=self.coef, exponents=self.exponents,
                            gate_feature=self.gate_feature, gate_lo=self.gate_lo,
                            gate_hi=self.gate_hi, corr_rows=self.corr_rows,
                            corr_factor=self.corr_factor,
                            header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
        return buf.getvalue()

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.to_npz_bytes())

    @classmethod
    def load(cls, path_or_bytes: str | Path | bytes) -> "KernelCostModel":
        """Load from a ``.npz`` path or its bytes. Never unpickles.

        Raises :class:`~nnmeter_nas.errors.RegressorFileError` (a ``ValueError``) naming the
        file and the missing or unreadable entry."""
        from ..errors import RegressorFileError
        from .npz_file import read_regressor_npz

        keys = ("coef", "exponents", "gate_feature", "gate_lo", "gate_hi", "corr_rows",
                "corr_factor")
        label, redo, header, arrays = read_regressor_npz(path_or_bytes, keys,
                                                         "kernel cost model",
                                                         "KernelCostModel.save")
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            got = header.get("format") if isinstance(header, dict) else type(header).__name__
            raise RegressorFileError(f"{label}not a kernel cost model file (header format "
                                     f"{got!r}, expected {FORMAT!r}){redo}")
        if int(header.get("format_version", 0)) > FORMAT_VERSION:
            raise RegressorFileError(f"{label}kernel cost model format version "
                                     f"{header['format_version']} is newer than this nnmeter_nas "
                                     "supports; upgrade nnmeter-nas")
        missing = [k for k in ("regressor", "n_features") if k not in header]
        if missing:
            raise RegressorFileError(f"{label}the kernel cost model's header lacks "
                                     f"{', '.join(missing)}{redo}")
        return cls(regressor=header["regressor"], n_features=header["n_features"],
                   corr_bound=header.get("corr_bound", 1.5),
                   term_names=header.get("term_names", []), meta=header.get("meta", {}),
                   domain=header.get("domain"), **arrays)


@dataclass(frozen=True)
class Term:
    """One cost term of a kernel type: a monomial ``{quantity: exponent}``, an optional gate
    ``(feature index, lo, hi)`` and a constant ``scale`` (> 0) its fitted coefficient is taken
    at: a term whose key it shares with another kernel type counts ``scale`` units of that
    key's quantity per unit of its monomial (a squeeze-and-excitation block's two fully
    connected layers: two launches). The stored model folds it into ``coef``."""

    name: str
    powers: Mapping[str, float]
    gate: tuple[int, float, float] | None = None
    scale: float = 1.0


def term_arrays(regressor: str, terms: Sequence[Term]) -> dict[str, np.ndarray]:
    """``exponents``, ``gate_feature``, ``gate_lo``, ``gate_hi`` arrays of ``terms``."""
    names, _ = QUANTITIES.get(regressor, (GENERIC_QUANTITY_NAMES, None))
    E = np.zeros((len(terms), len(names)))
    gf = np.full(len(terms), -1, dtype=np.int32)
    lo = np.zeros(len(terms))
    hi = np.zeros(len(terms))
    for j, t in enumerate(terms):
        for q, e in t.powers.items():
            if q not in names:
                raise KeyError(f"{regressor}: unknown quantity {q!r} (has {list(names)})")
            E[j, names.index(q)] = e
        if t.gate is not None:
            gf[j], lo[j], hi[j] = t.gate
    return {"exponents": E, "gate_feature": gf, "gate_lo": lo, "gate_hi": hi}
