"""Fit a device's predictor package from measured NAS-Bench-201 networks.

:func:`fit_nb201_model` fits an :class:`~.additive.AdditiveLatencyModel` on the kernels the
engine finds in each network under the device's fusion rules; :func:`write_nb201_package` turns
it into a package (one lookup tree per kernel type, the feature range each saw, the per-network
overhead and a description of the method in the manifest).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..graph import OpGraph
from ..packages.format import feature_range_of, write_package
from .additive import AdditiveLatencyModel
from .configs import kernel_configs
from .cost_basis import FAMILIES, family_of
from .lookup_tree import empty_feature_range, extrapolation_tree, lookup_tree
from .nb201_devices import DEVICES, DeviceSpec

FEATURE_SET = "nnmeter-nas-1"
PACKAGE_VERSION = "nb201-1"

#: nn-Meter kernel types NAS-Bench-201 networks do not contain. Packages give them an
#: uncalibrated cost-model regressor with an empty feature range, so such kernels are costed
#: (not counted as 0 ms) and always flagged ``in_domain=False``.
EXTRAPOLATED_TYPES = ("dwconv-bn-relu", "maxpool", "bn", "hswish", "channelshuffle", "split",
                      "se", "concat")

METHOD = (
    "Additive kernel model fitted to whole-network latencies. Each measured NAS-Bench-201 "
    "network (C=16, N=5, 1x3x32x32 input) is represented by the graph the engine gets from "
    "nnmeter_nas.search_spaces.nasbench201.build_nb201_network(arch) (none edges and edges "
    "that cannot reach the cell output dropped, BatchNorm folded; built directly by "
    "nnmeter_nas.fitting.nb201_graphs.nb201_graph_direct, which the tests check against the "
    "torch export) and split into kernels with this package's fusion rules. A network's "
    "latency is modelled as network_overhead_ms + the sum of its kernels' latencies, a "
    "kernel's latency depending only on its configuration (regressor name + nnmeter-nas-1 "
    "feature vector). Stage 1 fits a shared non-negative cost model per kernel family (conv: "
    "launch, MACs, elements in+out, parameters; pool: launch, window reads, elements; "
    "element-wise: launch, elements) and the overhead by bounded least squares on relative "
    "errors. Stage 2 fits one ridge-penalised relative correction per group of kernels that "
    "differ only in resolution and width (same regressor, kernel size, stride, channel "
    "ratio), latencies kept >= 0: NAS-Bench-201 repeats one cell at three resolutions, so the "
    "split of a cell operation's cost between its three sizes, and of the stem, reduction "
    "blocks and classifier (present once in every network) against the overhead, cannot be "
    "measured and is left to the cost model. The ridge strength is chosen by 5-fold "
    "cross-validation on the training networks. Each kernel type's regressor is one "
    "regression tree returning the fitted latency of every seen configuration exactly and "
    "the cost model's latency at filler points inside the seen feature range; kernel types "
    "NAS-Bench-201 lacks get the cost model's uncalibrated extrapolation with an empty "
    "feature range (always in_domain=False).")


def network_counters(graphs: Sequence[OpGraph], spec: DeviceSpec) -> list[Counter]:
    """Kernel configurations of each graph under the device's fusion rules."""
    rules = spec.rules()
    return [kernel_configs(g, rules, feature_set=FEATURE_SET) for g in graphs]


def cross_validate(counters: Sequence[Counter], y: np.ndarray, params: Mapping[str, Any], *,
                   folds: int = 5, seed: int = 0) -> float:
    """Mean squared relative error of :class:`AdditiveLatencyModel` ``(**params)`` over
    ``folds`` random folds (the training networks only)."""
    y = np.asarray(y, dtype=float)
    order = np.random.default_rng(seed).permutation(len(y))
    parts = np.array_split(order, folds)
    errs = []
    for k in range(folds):
        te = parts[k]
        tr = np.concatenate([parts[j] for j in range(folds) if j != k])
        model = AdditiveLatencyModel(**params).fit([counters[i] for i in tr], y[tr])
        pred = model.predict([counters[i] for i in te])
        errs.append((pred / y[te] - 1.0) ** 2)
    return float(np.mean(np.concatenate(errs)))


def fit_nb201_model(counters: Sequence[Counter], y: Sequence[float], *,
                    ridges: Sequence[float | None] = (None, 1.0, 0.1, 0.01, 1e-3, 1e-4, 1e-5),
                    folds: int = 5, seed: int = 0) -> tuple[AdditiveLatencyModel, dict]:
    """Choose the ridge strength by cross-validation on the given (training) networks, then
    fit on all of them. Returns the model and ``{"ridge": ..., "cv_rmspe": {ridge: rmspe}}``."""
    y = np.asarray(y, dtype=float)
    scores = {}
    for r in ridges:
        scores[r] = float(np.sqrt(cross_validate(counters, y, {"ridge": r}, folds=folds,
                                                 seed=seed)))
    best = min(scores, key=lambda r: scores[r])
    model = AdditiveLatencyModel(ridge=best).fit(counters, y)
    return model, {"ridge": best, "cv_folds": folds,
                   "cv_rmspe": {("none" if r is None else repr(r)): s for r, s in scores.items()}}


def _description(spec: DeviceSpec, n_train: int, fitted: Mapping[str, np.ndarray],
                 extrapolated: Sequence[str]) -> str:
    conv = fitted.get("conv-bn-relu")
    dims = ""
    if conv is not None:
        dims = (f" on {int(conv[:, 0].min())}x{int(conv[:, 0].min())} to "
                f"{int(conv[:, 0].max())}x{int(conv[:, 0].max())} feature maps with at most "
                f"{int(max(conv[:, 1].max(), conv[:, 2].max()))} channels")
    return (f"Latency of {spec.hardware}, {spec.framework}, fitted offline to {n_train} "
            "NAS-Bench-201 networks measured by the nn-Meter authors (this is not nn-Meter's own "
            "predictor). Calibrated only for the kernels such networks hold "
            f"({', '.join(sorted(fitted))}){dims}; see each kernel's feature_range. Kernels "
            "outside those ranges (e.g. 224x224 inputs, wider layers) are flagged "
            "in_domain=False. Kernel types NAS-Bench-201 lacks "
            f"({', '.join(extrapolated)}) get an uncalibrated cost-model estimate and are always "
            "flagged in_domain=False. Add network_overhead_ms once per network. "
            "Held-out accuracy: see 'validation'. An installed official nn-Meter predictor of "
            "the same name takes precedence over this built-in one.")


def write_nb201_package(dest: str | Path, device: str, model: AdditiveLatencyModel, *,
                        n_train: int, fit_info: Mapping[str, Any] | None = None,
                        validation: Mapping[str, Any] | None = None,
                        data_source: Mapping[str, Any] | None = None,
                        version: str = PACKAGE_VERSION, n_fill: int = 128,
                        overwrite: bool = True) -> Path:
    """Write the package of ``device`` (an nn-Meter device name) from a fitted model."""
    if device not in DEVICES:
        raise KeyError(f"unknown device {device!r}; NAS-Bench-201 packages exist for "
                       f"{sorted(DEVICES)}")
    spec = DEVICES[device]
    regressors, kernel_info = {}, {}
    fitted = {reg: X for reg, (X, _) in model.config_table().items()}
    extrapolated = []
    for reg, (X, ms) in sorted(model.config_table().items()):
        def fill(Xf: np.ndarray, reg: str = reg) -> np.ndarray:
            return np.array([max(model.prior_ms(reg, x), 0.0) for x in Xf])

        regressors[reg] = lookup_tree(reg, X, ms, fill, n_fill=n_fill,
                                      meta={"device": device, "package_version": version})
        kernel_info[reg] = {"feature_range": feature_range_of(X), "n_train": int(len(X)),
                            "n_train_unit": "distinct kernel configurations",
                            "configurations": [[*map(float, x), float(v)]
                                               for x, v in zip(X, ms)]}
    for reg in EXTRAPOLATED_TYPES:
        if reg in regressors:
            continue

        def cost(Xb: np.ndarray, reg: str = reg) -> np.ndarray:
            return np.array([max(model.prior_ms(reg, x), 0.0) for x in Xb])

        tree = extrapolation_tree(reg, cost, n=512,
                                  meta={"device": device, "package_version": version})
        if tree is None:
            continue
        regressors[reg] = tree
        extrapolated.append(reg)
        kernel_info[reg] = {
            "feature_range": empty_feature_range(tree.n_features), "n_train": 0,
            "calibrated": False,
            "note": ("no NAS-Bench-201 kernel has this type: latencies are the fitted "
                     f"{family_of(reg)} cost model's extrapolation, never calibrated; the empty "
                     "feature range flags every such kernel in_domain=False")}
    source = {
        "kind": "fitted from whole-network measurements",
        "method": METHOD,
        "data": dict(data_source or {}),
        "n_train_networks": int(n_train),
        "fusion_rules_rationale": spec.fusion_note,
        "cost_model": {"families": {f: list(t) for f, t in FAMILIES.items()},
                       "theta_ms": {f: [float(v) for v in th] for f, th in model.theta_.items()}},
        "fit": dict(fit_info or {}),
        "built_by": "benchmarks/fit_nb201_predictors.py",
        "docs": "docs/nb201_predictors.md",
    }
    extra = {"network_overhead_ms": float(model.overhead_ms_),
             "network_overhead_note": (
                 "a constant per inference (input/output transfer, runtime invocation) that the "
                 "fit attributes to no kernel; add it once per network to the sum of kernel "
                 "latencies"),
             "validation": dict(validation or {}),
             "hardware": spec.hardware}
    return write_package(dest, name=device, version=version, device=device,
                         framework=spec.framework, regressors=regressors,
                         fusion_rules=spec.fusion_rules, feature_set=FEATURE_SET,
                         description=_description(spec, n_train, fitted, extrapolated),
                         kernel_info=kernel_info,
                         source=source, extra=extra, overwrite=overwrite)


def nb201_split(indices: Sequence[int], test_fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """Held-out mask over NAS-Bench-201 ``indices`` (sorted ascending, as
    :meth:`NB201Table.measured_on_all` returns them): True = held out. The built-in packages
    were fitted on the networks where it is False (``seed=0``, ``test_fraction=0.2``)."""
    idx = np.asarray(indices)
    if np.any(np.diff(idx) <= 0):
        raise ValueError("nb201_split expects strictly increasing NAS-Bench-201 indices")
    order = np.random.default_rng(seed).permutation(len(idx))
    n_test = int(round(test_fraction * len(idx)))
    mask = np.zeros(len(idx), dtype=bool)
    mask[order[:n_test]] = True
    return mask


def indices_digest(indices: Sequence[int]) -> str:
    """Short sha256 of a list of NAS-Bench-201 indices (recorded in the manifest)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps([int(i) for i in indices]).encode()).hexdigest()[:16]


def predict_networks_ms(predictor, models: Sequence[Any]) -> np.ndarray:
    """Latency (ms) of each model: the engine's kernel sum plus the package's
    ``network_overhead_ms`` (the engine adds it)."""
    return np.asarray(predictor.predict_many(models), dtype=float)
