"""Fit a device's kernel cost models from network-level measurements of any source.

One model for every source: a measured network is a multiset of kernel configurations
(:func:`.configs.kernel_configs`), and its latency is modelled as ::

    latency(net) = overhead[s] + sum_g factor[s, g] * sum_{kernels k of group g} cost(k)
    cost(k)      = sum_j theta[key_j] * term_j(k)        (theta >= 0, terms of cost_terms)

``cost`` is the device's :class:`~nnmeter_nas.regressors.cost_model.KernelCostModel` of the
kernel's type; ``s`` the source of the measurement. *Native* sources measured the device itself
(``factor = 1``): NAS-Bench-201, nn-Meter's reference networks, a user's own networks. A source
measured on the same hardware with another runtime (the Pixel 4 with a newer TFLite) gets its
own overhead and fitted factors, one or one per kernel group (:data:`FACTOR_MODES`: e.g. 1x1
dense convolutions and the rest), optionally one more per class of cost terms
(:data:`TERM_CLASSES`: launch, memory, thin-layer), reported in the package manifest.

Fitting minimises the weighted relative squared error (each source's rows share a total weight,
:attr:`DeviceLatencyFit.source_weights`), alternating between ``theta`` and overheads (bounded
least squares, ``theta >= 0``) and the foreign sources' factors. An optional stage fits a
bounded multiplicative correction per measured configuration (ridge-penalised towards 1,
within ``[1/correction_bound, correction_bound]``), stored in the cost model and applied only
to those exact configurations.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..errors import ConvergenceWarning
from ..regressors.cost_model import KernelCostModel, Term, term_arrays
from ..warn import warn
from .cost_terms import floor_of, is_excess_key, terms_of
from .configs import Config

NATIVE_SOURCES = ("nb201", "nnmeter-reference", "user")

#: Sources whose latencies were put in this device's units before the fit, from *another*
#: device's measurements scaled by a ratio fitted on networks both devices ran (the Adreno 630
#: borrows the Adreno 640's per-operator fully connected timings: :func:`.sources.
#: borrowed_fc_samples`). Fitted like native operator rows (factor 1), never corrected, and
#: never counted as calibrating a kernel (:func:`.device_package.kernel_ranges`): they give the
#: structure of a cost, not the device's own measurement of it.
BORROWED_SOURCES = ("borrowed",)

#: Kernel types that cost nothing (a flatten before the classifier): not fitted, declared
#: free in the package.
FREE_TYPES = ("reshape",)

#: Kernel groups a foreign source's factor may differ between: dense convolutions (kernel
#: size 2 and larger), depthwise convolutions, everything else, 1x1 dense convolutions,
#: element-wise additions (``add``, ``addrelu``), 3x3 stride-1 dense convolutions (where a
#: GPU runtime may use Winograd).
FACTOR_GROUPS = ("conv", "dwconv", "other", "conv1x1", "add", "conv3x3s1")

#: ``factor_groups`` modes: which fitted factor each of :data:`FACTOR_GROUPS` uses.
FACTOR_MODES = {False: (0, 0, 0, 0, 0, 0),              # one factor
                True: (0, 1, 2, 0, 2, 0),               # dense / depthwise / other
                "conv1x1": (0, 0, 0, 1, 0, 0),          # 1x1 convolutions / everything else
                "add": (0, 0, 0, 0, 1, 0),              # additions / everything else
                "conv1x1+add": (0, 0, 0, 1, 2, 0),      # 1x1 convolutions / additions / rest
                "conv1x1+add+3x3": (0, 0, 0, 1, 2, 3),  # ... / 3x3 stride-1 convolutions
                "conv1x1+add+3x3+dw": (0, 1, 0, 2, 3, 4),
                "all": (0, 1, 2, 3, 4, 0)}              # each group but 3x3 its own

#: Classes of cost terms (by the suffix of their key, :mod:`.cost_terms`) that a foreign
#: source's factor may treat apart from the kernel groups (``factor_terms``): a runtime may
#: change a kernel's fixed dispatch cost (``launch``), its memory traffic (``memory``: elements
#: read and written, weights, pooling windows) or its thin-layer inefficiency (``thin``:
#: ``MACs / cin``, ``MACs / cout``) by another ratio than its arithmetic.
TERM_CLASSES = {"launch": ("launch",),
                "memory": ("elements_in", "elements_out", "params", "elements", "window",
                           "writes"),
                "thin": ("macs_per_cin", "macs_per_cout")}


def term_class(key: str) -> str | None:
    """The :data:`TERM_CLASSES` entry of a coefficient key (None: the kernel's work)."""
    suffix = key.rsplit(":", 1)[-1]
    for name, suffixes in TERM_CLASSES.items():
        if suffix in suffixes:
            return name
    return None


#: Lowest factor of each group (others: :data:`FACTOR_FLOOR`). A newer runtime may fuse an
#: operator into its producer, so that it costs next to nothing there: the Pixel 4's TFLite
#: GPU delegate folds a residual addition into the convolution before it
#: (``pixel4_ops_gpu.csv`` has no ADD rows; its convolution rows include the fused additions).
#: A factor shared by several groups keeps the highest of their floors.
FACTOR_LOWER = {"add": 0.0}
#: Lowest factor of the other groups (and the highest of any group: 1 / this).
FACTOR_FLOOR = 0.2
#: A fit whose foreign factors change by at most this (relative to the factor, or to
#: FACTOR_FLOOR for a factor near 0) in its last alternation round counts as converged.
FACTOR_TOL = 1e-3

#: A foreign source whose factor of a group is below this does not calibrate that group's
#: kernels (:func:`.device_package.kernel_ranges`): its rows say next to nothing about them.
MIN_CALIBRATING_FACTOR = 0.05


def factor_group(cfg) -> str:
    """The factor group of a kernel configuration ``(regressor, features)`` (or of a bare
    regressor name: a dense convolution of unknown kernel size is ``"conv"``)."""
    reg, x = (cfg, None) if isinstance(cfg, str) else cfg
    if reg == "conv-bn-relu":
        if x is not None and len(x) > 3 and x[3] <= 1.5:
            return "conv1x1"
        if x is not None and len(x) > 4 and 2.5 <= x[3] <= 3.5 and x[4] <= 1.5:
            return "conv3x3s1"
        return "conv"
    if reg == "dwconv-bn-relu":
        return "dwconv"
    if reg in ("add", "addrelu"):
        return "add"
    return "other"


@dataclass
class NetworkSample:
    """One measured network.

    Parameters
    ----------
    name : str
        Label (file or network name), used in messages and reports.
    source : str
        Where the latency comes from: one of :data:`NATIVE_SOURCES` (the device itself), of
        :data:`BORROWED_SOURCES` (another device, already scaled to this one) or any other name
        (same hardware, other runtime: fitted factors).
    configs : Counter
        Its kernel configurations under the device's fusion rules.
    latency_ms : float
        Measured latency, ms.
    whole_network : bool, default=True
        False for one operator timed on its own (a source's per-operator rows): its latency
        carries no per-network overhead, only the source's factor.
    """

    name: str
    source: str
    configs: Counter
    latency_ms: float
    whole_network: bool = True


class DeviceLatencyFit:
    """Kernel cost models of one device fitted to measured networks (scikit-learn style).

    Parameters
    ----------
    source_weights : dict, default=None
        Total weight of each source's rows (default 1 each); within a source, rows weigh
        equally on relative error.
    theta_ridge : float, default=1e-3
        Ridge on the column-normalised term coefficients (splits collinear terms evenly).
    n_alternations : int, default=10
        Rounds of (coefficients, factors) alternation when foreign sources are present. The
        fit does not stop earlier; where a foreign source's factors still move by more than
        ``FACTOR_TOL`` (relative) in the last round it reports ``converged_ = False`` and
        issues a :class:`~nnmeter_nas.errors.ConvergenceWarning`. The built-in Adreno 640 fit
        is such a fit: stopped at 10 rounds, its factors still drift, and its figures depend on
        the stopping point (docs/four_devices.md, round 5); so is the Cortex-A76's, nearly
        converged.
    corrections : bool, default=True
        Fit the bounded per-configuration correction (stage 2).
    correction_ridge : float, default=0.3
        Its ridge strength (on the log-free relative correction ``u``, factor ``1 + u``).
    correction_bound : float, default=1.5
        Corrections stay within ``[1 / bound, bound]``.
    correction_sources : tuple of str, default=NATIVE_SOURCES
        Sources whose networks' configurations may get a correction.
    excess_ridge : float, default=0.05
        Ridge on a kernel type's own terms beyond its family's (:func:`.cost_terms.is_excess_key`).
    min_excess_span : float, default=8.0
        A kernel type's own size-dependent term (:func:`.cost_terms.is_excess_key`, not a
        launch) is fitted only when its values over the measured configurations span at least
        this ratio (max / min); otherwise it stays 0 and the type's size dependence is its
        family's. At one measured size a launch and a per-element cost cannot be told apart,
        and a split the ridge made up would be extrapolated to every other size (the VPU's
        BN-ReLU, measured only in NAS-Bench-201's 8x8x64 last activation: DenseNet-121 left
        out came out +189 %). 8 was chosen over 4 in leave-one-out (Adreno 630 within +-10 %
        76.9 -> 84.6 %, VPU 64.3 -> 71.4 %; the Cortex-A76 and Adreno 640 unchanged). 1 keeps
        every term.
    min_excess_networks : int, default=1
        A kernel type's own terms (:func:`.cost_terms.is_excess_key`, its launch included) are
        fitted only when the type occurs in at least this many measured samples (networks or
        operator rows, borrowed rows not counted); otherwise they stay 0 and the type costs
        what its family's shared terms say. Kernel types that occur in one network only
        (the VPU's channel shuffles, splits and, with DenseNet-121 left out, concatenations:
        ShuffleNetV2 alone) are collinear with each other there: only their sum is measured,
        and any split of it the ridge makes up is extrapolated to other networks. Tried for the
        VPU, not used by the built-in fits: the network's unexplained time then goes into the
        shared terms of every network (docs/four_devices.md, round 4).
    term_set : str, default="default"
        Which cost terms each kernel type has (:data:`.cost_terms.TERM_SETS`).
    factor_groups : bool or str, default=True
        Factors of each foreign source (:data:`FACTOR_MODES`): True, one per kernel group (dense
        convolutions, depthwise, other); False, one; ``"conv1x1"``, one for 1x1 dense
        convolutions and one for the rest (a newer runtime's 1x1 kernels may speed up by
        another ratio than its 3x3 ones); ``"conv1x1+add"``, as ``"conv1x1"`` with one more
        for element-wise additions, which may go to 0 (:data:`FACTOR_LOWER`: a runtime that
        fuses them into the convolution before); the other :data:`FACTOR_MODES`; or a dict
        ``{source: mode}`` (``"*"``: the other sources).
    factor_terms : sequence of str, default=()
        :data:`TERM_CLASSES` whose terms get one more factor per foreign source, shared by
        every kernel group, instead of their kernel group's: e.g. ``("launch",)`` splits a
        kernel's cost under a newer runtime into a fixed (dispatch) part and a
        work-proportional part, each with its own ratio. Reported in ``factors_`` under the
        class's name.
    network_factor_ridge : float or None, default=None
        None (default): every network of a foreign source shares the source's factors. A
        number ``lambda >= 0``: each whole network of a foreign source gets one more factor of
        its own, ``m``, multiplying its source's group factors (a newer runtime chooses its GPU
        kernels per network, so its ratio to the device may differ by network family), shrunk
        towards 1 by a ridge on ``log m``: per network the fit minimises ::

            (relative error of the network)^2 + lambda * (log m)^2

        (weighted as the network's row), so a network's own factor absorbs about
        ``1 / (1 + lambda)`` of its deviation from the source's ratio. ``lambda -> inf`` is
        the fit without them; ``lambda = 0`` leaves each network's total free, so the
        network informs the fit only where its factor is tied to other rows (none: a
        source's per-operator rows keep the source's factors). ``m`` stays within
        ``[FACTOR_FLOOR, 1 / FACTOR_FLOOR]``; reported in ``network_factors_``. A network the
        fit did not see (held out) is predicted with its source's factors (``m = 1``).

    Attributes
    ----------
    factor_change_ : float
        Largest relative change of a foreign source's factor (or network factor) in the last
        alternation round; 0.0 without foreign sources.
    converged_ : bool
        ``factor_change_ <= FACTOR_TOL``.
    """

    def __init__(self, *, source_weights: Mapping[str, float] | None = None,
                 theta_ridge: float = 1e-3, n_alternations: int = 10,
                 corrections: bool = True, correction_ridge: float = 0.3,
                 correction_bound: float = 1.5,
                 correction_sources: Sequence[str] = NATIVE_SOURCES,
                 excess_ridge: float = 0.05, min_excess_span: float = 8.0,
                 min_excess_networks: int = 1, term_set: str = "default",
                 factor_groups: bool | str | Mapping = True,
                 factor_terms: Sequence[str] = (),
                 network_factor_ridge: float | None = None) -> None:
        self.source_weights = source_weights
        self.theta_ridge = theta_ridge
        self.n_alternations = n_alternations
        self.corrections = corrections
        self.correction_ridge = correction_ridge
        self.correction_bound = correction_bound
        self.correction_sources = tuple(correction_sources)
        self.excess_ridge = excess_ridge
        self.factor_groups = factor_groups
        self.min_excess_span = min_excess_span
        self.min_excess_networks = int(min_excess_networks)
        self.term_set = term_set
        self.factor_terms = tuple(factor_terms)
        self.network_factor_ridge = network_factor_ridge

    # ------------------------------------------------------------------ design
    def _slots(self) -> tuple[str, ...]:
        """Factor slots: :data:`FACTOR_GROUPS`, then the classes of ``factor_terms``."""
        return FACTOR_GROUPS + tuple(self.factor_terms)

    def _slot(self, cfg: Config, key: str) -> int:
        tc = term_class(key)
        if tc is not None and tc in self.factor_terms:
            return len(FACTOR_GROUPS) + self.factor_terms.index(tc)
        return FACTOR_GROUPS.index(factor_group(cfg))

    def _config_columns(self, cfg: Config) -> dict[str, float]:
        reg, x = cfg
        cached = self._colcache.get(cfg)
        if cached is None:
            terms = terms_of(reg, self.term_set)
            model = _unit_model(reg, len(x), [t for _, t in terms])
            vals = model.terms(np.asarray([x]))[0]
            cached = {}
            for (key, t), v in zip(terms, vals):
                cached[key] = cached.get(key, 0.0) + t.scale * float(v)
            self._colcache[cfg] = cached
        return cached

    def _design(self, samples: Sequence[NetworkSample]) -> np.ndarray:
        """``(n_samples, n_keys, n_groups)``: term sums of each sample per factor group."""
        D = np.zeros((len(samples), len(self.keys_), len(self._slots())))
        for i, s in enumerate(samples):
            for cfg, n in s.configs.items():
                if cfg[0] in FREE_TYPES:
                    continue
                for key, v in self._config_columns(cfg).items():
                    j = self._key_index.get(key)
                    if j is not None:
                        D[i, j, self._slot(cfg, key)] += n * v
        return D

    # ------------------------------------------------------------------ fitting
    def fit(self, samples: Sequence[NetworkSample]) -> "DeviceLatencyFit":
        """Fit to measured networks (``latency_ms > 0``)."""
        from scipy.optimize import lsq_linear

        if not samples:
            raise ValueError("DeviceLatencyFit.fit: no measured networks")
        y = np.array([s.latency_ms for s in samples], dtype=float)
        bad = [s.name for s in samples if not (np.isfinite(s.latency_ms) and s.latency_ms > 0)]
        if bad:
            raise ValueError(f"latencies must be positive finite ms; bad: {bad[:5]}")
        self._colcache: dict = {}
        keys = sorted({k for s in samples for cfg in s.configs if cfg[0] not in FREE_TYPES
                       for k in self._config_columns(cfg)})
        self.keys_ = keys
        self._key_index = {k: j for j, k in enumerate(keys)}
        D = self._design(samples)
        self.unidentified_ = self._unidentified_keys(samples)
        for key in self.unidentified_:
            D[:, self._key_index[key], :] = 0.0      # its ridge then keeps it at 0
        src = [s.source for s in samples]
        self.sources_ = sorted(set(src))
        foreign = [s for s in self.sources_ if s not in NATIVE_SOURCES + BORROWED_SOURCES]
        ovh_names = ["native"] + foreign
        ovh_of = np.array([ovh_names.index(s if s in foreign else "native") for s in src])
        whole = np.array([s.whole_network for s in samples], dtype=float)
        weights = dict(self.source_weights or {})
        counts = Counter(src)
        sw = np.array([np.sqrt(weights.get(s, 1.0) / counts[s]) for s in src]) / y
        slots = self._slots()
        factors = {s: np.ones(len(slots)) for s in foreign}
        row_factor = np.ones((len(y), len(slots)))
        n_keys = len(keys)
        theta = np.zeros(n_keys)
        ovh = np.zeros(len(ovh_names))
        rounds = self.n_alternations if foreign else 1
        lam = self.network_factor_ridge
        if lam is not None and not lam >= 0:
            raise ValueError(f"network_factor_ridge must be >= 0 or None, got {lam!r}")
        # each foreign source's whole networks: their own factor (1: none)
        own = np.array([s in foreign for s in src]) & (whole > 0) & (lam is not None)
        net_m = np.ones(len(y))
        change = 0.0
        for _ in range(max(rounds, 1)):
            before = np.concatenate([*factors.values(), net_m])
            for s in foreign:
                row_factor[np.array(src) == s] = factors[s]
            if own.any():
                row_factor[own] *= net_m[own, None]
            X = np.einsum("ikg,ig->ik", D, row_factor)
            O = np.zeros((len(y), len(ovh_names)))
            O[np.arange(len(y)), ovh_of] = whole
            M = np.hstack([X, O]) * sw[:, None]
            scale = np.linalg.norm(M, axis=0)
            scale[scale == 0] = 1.0
            Mn = M / scale
            k = Mn.shape[1]
            ridge = np.full(k, self.theta_ridge)
            ridge[:n_keys][[is_excess_key(key) for key in keys]] = self.excess_ridge
            Ma = np.vstack([Mn, np.diag(np.sqrt(ridge))])
            ta = np.concatenate([y * sw, np.zeros(k)])
            lower = np.zeros(k)
            lower[:n_keys] = [floor_of(key) for key in keys]
            lower *= scale
            sol = lsq_linear(Ma, ta, bounds=(lower, np.inf), method="bvls").x / scale
            # bvls may return -1e-20 for a bound at 0: clip to keep every cost term >= 0
            sol = np.maximum(sol, 0.0)
            theta, ovh = sol[:n_keys], sol[n_keys:]
            for s in foreign:
                rows = np.array(src) == s
                P = np.einsum("ikg,k->ig", D[rows], theta) * sw[rows, None]
                P_net = P                     # the source's share, before network factors
                P = P * net_m[rows, None]
                r = (y[rows] - ovh[ovh_names.index(s)] * whole[rows]) * sw[rows]
                gmap = np.asarray(FACTOR_MODES[self._factor_mode(s)])
                gmap = np.concatenate([gmap, int(gmap.max()) + 1
                                       + np.arange(len(self.factor_terms), dtype=int)])
                n_par = int(gmap.max()) + 1
                Pm = np.zeros((P.shape[0], n_par))
                for g, j in enumerate(gmap):
                    Pm[:, j] += P[:, g]
                used = Pm.sum(axis=0) > 0
                par = np.ones(n_par)
                lb = np.zeros(n_par)
                for g, j in enumerate(gmap):
                    lb[j] = max(lb[j], FACTOR_LOWER.get(slots[g], FACTOR_FLOOR))
                if used.any():
                    par[used] = lsq_linear(Pm[:, used], r, bounds=(lb[used], 1 / FACTOR_FLOOR),
                                           method="bvls").x
                # An unused factor takes the mean of the used ones (reported, never fitted).
                par[~used] = float(np.mean(par[used])) if used.any() else 1.0
                f = par[gmap]
                factors[s] = f
                mine = own[rows]
                if mine.any():
                    # (relative residual - m * relative prediction)^2 + lam (log m)^2, per row
                    a = r[mine] / (sw[rows][mine] * y[rows][mine])
                    b = (P_net[mine] @ f) / (sw[rows][mine] * y[rows][mine])
                    idx = np.flatnonzero(rows)[mine]
                    net_m[idx] = [_network_factor(ai, bi, lam) for ai, bi in zip(a, b)]
            after = np.concatenate([*factors.values(), net_m])
            moved = np.abs(after - before) / np.maximum(np.abs(before), FACTOR_FLOOR)
            change = float(np.max(moved, initial=0.0))
        self.factor_change_ = change if foreign else 0.0
        self.converged_ = self.factor_change_ <= FACTOR_TOL
        if not self.converged_:
            warn(f"DeviceLatencyFit: the alternation between kernel costs and the factors of "
                 f"{', '.join(foreign)} stopped after {rounds} rounds with a factor still "
                 f"changing by {100 * self.factor_change_:.2g}% per round; the fit depends on "
                 "where it stopped. Raise n_alternations to go further; the built-in "
                 "Cortex-A76 and Adreno 640 packages are fitted with 10 rounds, not converged "
                 "either (docs/four_devices.md, round 5)", ConvergenceWarning)
        self.theta_ = dict(zip(keys, theta.tolist()))
        self.overhead_ms_ = {n: float(v) for n, v in zip(ovh_names, ovh)}
        self.factors_ = {s: dict(zip(slots, f.tolist())) for s, f in factors.items()}
        self.network_factors_ = {samples[i].name: float(net_m[i]) for i in np.flatnonzero(own)}
        self.correction_ = {}
        if self.corrections:
            self._fit_corrections(samples, y, sw)
        return self

    def _factor_mode(self, source: str):
        """The :data:`FACTOR_MODES` key of a foreign source (``factor_groups`` may map
        sources to modes, ``"*"`` for the others)."""
        fg = self.factor_groups
        if isinstance(fg, Mapping):
            return fg.get(source, fg.get("*", False))
        return fg

    def _unidentified_keys(self, samples: Sequence[NetworkSample]) -> list[str]:
        """Own size-dependent terms whose measured values span less than
        :attr:`min_excess_span` (max / min over the distinct configurations), and own terms
        of kernel types held by fewer than :attr:`min_excess_networks` samples."""
        lo: dict[str, float] = {}
        hi: dict[str, float] = {}
        for cfg in {c for s in samples for c in s.configs if c[0] not in FREE_TYPES}:
            for key, v in self._config_columns(cfg).items():
                if v > 0 and is_excess_key(key) and not key.endswith(":launch"):
                    lo[key] = min(lo.get(key, np.inf), v)
                    hi[key] = max(hi.get(key, 0.0), v)
        out = {k for k in lo if hi[k] < self.min_excess_span * lo[k]}
        if self.min_excess_networks > 1:
            held: Counter = Counter()
            for s in samples:
                if s.source in BORROWED_SOURCES:
                    continue
                keys = {key for cfg in s.configs if cfg[0] not in FREE_TYPES
                        for key, v in self._config_columns(cfg).items()
                        if v > 0 and is_excess_key(key)}
                held.update(keys)
            out |= {k for k, n in held.items() if n < self.min_excess_networks}
        return sorted(out)

    def _fit_corrections(self, samples: Sequence[NetworkSample], y: np.ndarray,
                         sw: np.ndarray) -> None:
        from scipy.optimize import lsq_linear

        cfgs = sorted({c for s in samples if s.source in self.correction_sources
                       for c in s.configs})
        if not cfgs:
            return
        index = {c: j for j, c in enumerate(cfgs)}
        base = self._predict_uncorrected(samples)
        B = np.zeros((len(samples), len(cfgs)))
        for i, s in enumerate(samples):
            for c, n in s.configs.items():
                j = index.get(c)
                if j is not None:
                    B[i, j] += n * self._config_ms_as(s.source, c) * self._net_factor(s)
        B *= sw[:, None]
        r = (y - base) * sw
        k = len(cfgs)
        Ba = np.vstack([B, np.sqrt(self.correction_ridge) * np.eye(k) *
                        np.linalg.norm(B, axis=0).max()])
        ra = np.concatenate([r, np.zeros(k)])
        b = self.correction_bound
        u = lsq_linear(Ba, ra, bounds=(1 / b - 1, b - 1), method="bvls").x
        self.correction_ = {c: 1.0 + float(v) for c, v in zip(cfgs, u) if abs(v) > 1e-6}

    # ------------------------------------------------------------------ prediction
    def _config_ms_as(self, source: str, cfg: Config) -> float:
        """Uncorrected latency (ms) of one configuration as ``source`` measures it (its
        factors; the device's own for a native source)."""
        f = self.factors_.get(source)
        if f is None or cfg[0] in FREE_TYPES:
            return self._config_ms(cfg)
        slots = self._slots()
        fallback = f["conv"]
        return sum(self.theta_.get(k, 0.0) * v * f.get(slots[self._slot(cfg, k)], fallback)
                   for k, v in self._config_columns(cfg).items())

    def _config_ms(self, cfg: Config) -> float:
        if cfg[0] in FREE_TYPES:
            return 0.0
        return sum(self.theta_.get(k, 0.0) * v for k, v in self._config_columns(cfg).items())

    def _net_factor(self, s: NetworkSample, as_source: bool = True) -> float:
        """The own factor of a foreign source's whole network the fit saw (1 otherwise)."""
        if not as_source or not s.whole_network or s.source not in self.factors_:
            return 1.0
        return getattr(self, "network_factors_", {}).get(s.name, 1.0)

    def _overhead(self, source: str) -> float:
        return self.overhead_ms_.get(source if source in self.factors_ else "native", 0.0)

    def _predict_uncorrected(self, samples: Sequence[NetworkSample]) -> np.ndarray:
        return np.array([self._overhead(s.source) * s.whole_network + self._net_factor(s) * sum(
            n * self._config_ms_as(s.source, c) for c, n in s.configs.items())
            for s in samples])

    def kernel_ms(self, cfg: Config) -> float:
        """Device latency (ms) of one kernel configuration (correction included)."""
        return self._config_ms(cfg) * self.correction_.get(cfg, 1.0)

    def predict(self, samples: Sequence[NetworkSample], *, as_source: bool = True
                ) -> np.ndarray:
        """Latency (ms) of each sample: on the device itself, or (``as_source``) as its own
        source would measure it (foreign sources: their factors and overhead)."""
        out = []
        for s in samples:
            src = s.source if as_source else "native"
            out.append(self._overhead(src) * s.whole_network
                       + self._net_factor(s, as_source) * sum(
                n * self._config_ms_as(src, c) * self.correction_.get(c, 1.0)
                for c, n in s.configs.items()))
        return np.asarray(out)

    # ------------------------------------------------------------------ export
    def regressors(self, n_features: Mapping[str, int],
                   meta: Mapping | None = None) -> dict[str, KernelCostModel]:
        """One :class:`KernelCostModel` per regressor in ``n_features`` (``{regressor: row
        length}``); types the data never held get the shared terms fitted on the others."""
        out = {}
        for reg, nf in sorted(n_features.items()):
            terms = terms_of(reg, self.term_set)
            # a family no measured network held keeps its floor (never a plateau)
            coef = np.array([max(self.theta_.get(key, 0.0), floor_of(key)) * t.scale
                             for key, t in terms])
            corr = [(c[1], f) for c, f in self.correction_.items() if c[0] == reg]
            out[reg] = KernelCostModel(
                regressor=reg, n_features=nf, coef=coef,
                corr_rows=np.asarray([x for x, _ in corr], dtype=float).reshape(-1, nf),
                corr_factor=np.asarray([f for _, f in corr], dtype=float),
                corr_bound=self.correction_bound,
                term_names=[key for key, _ in terms], meta=dict(meta or {}),
                **term_arrays(reg, [t for _, t in terms]))
        return out


def _network_factor(a: float, b: float, lam: float) -> float:
    """``m`` in ``[FACTOR_FLOOR, 1 / FACTOR_FLOOR]`` minimising ``(a - m b)^2 + lam (log m)^2``
    (``a``: a network's measured latency less its overhead, ``b``: its predicted latency at its
    source's factors, both relative to the measured latency)."""
    from scipy.optimize import minimize_scalar

    lo, hi = np.log(FACTOR_FLOOR), -np.log(FACTOR_FLOOR)
    if not b > 0:
        return 1.0
    if lam == 0:
        return float(np.exp(np.clip(np.log(a / b), lo, hi))) if a > 0 else FACTOR_FLOOR
    res = minimize_scalar(lambda u: (a - b * np.exp(u)) ** 2 + lam * u * u,
                          bounds=(lo, hi), method="bounded", options={"xatol": 1e-7})
    return float(np.exp(res.x))


def _unit_model(reg: str, n_features: int, terms: Sequence[Term]) -> KernelCostModel:
    return KernelCostModel(regressor=reg, n_features=n_features, coef=np.ones(len(terms)),
                           **term_arrays(reg, terms))
