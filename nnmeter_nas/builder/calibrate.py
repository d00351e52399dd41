"""Fit per-space calibrations (:mod:`nnmeter_nas.calibration`) from measured networks.

Given networks of one search space measured on the device and the predictor's uncalibrated
kernel breakdowns of them, find non-negative ``scale[regressor]`` and ``per_kernel_ms`` so
that ``sum(scale[r] * kernel_ms + per_kernel_ms)`` matches the measurements, minimising the
squared *relative* error (non-negative least squares on rows divided by the measurement).
Regressors that hold less than ``min_share`` of the predicted time share one scale, so a few
dozen networks suffice. Typical use::

    from nnmeter_nas.builder.calibrate import calibrate, save_calibration

    cal = calibrate(predictor, onnx_models, measured_ms, space="spos")
    save_calibration(package_dir, "spos", cal)
    load_predictor(name, calibration="spos")
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..calibration import Calibration
from ..errors import CalibrationError, HostMismatchError


def _design(breakdowns: Sequence[Sequence[Any]], min_share: float
            ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The regressors with their own scale, the design matrix (one row per network: the
    predicted ms of each scaled group, then the count of predicted kernels) and the fixed ms
    of every network (free or missing kernels and the package's network overhead)."""
    totals: dict[str, float] = {}
    for bd in breakdowns:
        for k in bd:
            if k.status == "predicted":
                totals[k.regressor] = totals.get(k.regressor, 0.0) + k.latency_ms
    grand = sum(totals.values())
    if grand <= 0:
        raise CalibrationError("the networks hold no kernel the predictor has a regressor "
                               "for, so there is nothing to calibrate; give networks of the "
                               "space the predictor was built for")
    # Columns: one scale per regressor with min_share of the time, one shared by the rest,
    # and the per-kernel cost (a count of kernels).
    own = sorted(r for r, t in totals.items() if t / grand >= min_share)
    column = {r: j for j, r in enumerate(own)}
    X = np.zeros((len(breakdowns), len(own) + 2))
    fixed = np.zeros(len(breakdowns))
    for i, bd in enumerate(breakdowns):
        fixed[i] = float(getattr(bd, "overhead_ms", 0.0))
        for k in bd:
            if k.status != "predicted":
                fixed[i] += k.latency_ms
                continue
            X[i, column.get(k.regressor, len(own))] += k.latency_ms
            X[i, -1] += 1.0
    return own, X, fixed


def check_enough_networks(breakdowns: Sequence[Sequence[Any]], *,
                          min_share: float = 0.03) -> None:
    """Raise :class:`~nnmeter_nas.errors.CalibrationError` when ``breakdowns`` (one per
    network) are fewer than the parameters a calibration of them has, so that too few
    networks are refused before they are measured rather than after."""
    own, X, _ = _design(breakdowns, min_share)
    n_params = int(np.count_nonzero(X.any(axis=0)))
    if len(breakdowns) < n_params:
        groups = [f"a scale for {r}" for r in own if X[:, own.index(r)].any()]
        if X[:, len(own)].any():
            groups.append("one shared by the other kernel types")
        raise CalibrationError(
            f"{len(breakdowns)} networks for {n_params} parameters ({', '.join(groups)}, the "
            "per-kernel cost); give at least as many networks as parameters, and better a "
            "few dozen (--models more files, or --space with --networks)")


def fit_calibration(breakdowns: Sequence[Sequence[Any]], latencies_ms: Sequence[float], *,
                    min_share: float = 0.03, prior: float = 0.1,
                    space: str | None = None) -> Calibration:
    """Fit a :class:`Calibration` from uncalibrated breakdowns (``KernelBreakdown``) of
    networks and their measured latencies (ms). Needs at least as many networks as
    parameters (the regressors with ``min_share`` of the time, one shared scale, the
    per-kernel cost), and should have several times more. ``prior`` is the weight, in
    networks, of a pull of every scale towards 1. Raises
    :class:`~nnmeter_nas.errors.CalibrationError` for too few networks or bad latencies."""
    from scipy.optimize import nnls

    y = np.asarray(latencies_ms, dtype=float)
    if len(breakdowns) != len(y):
        raise CalibrationError(f"{len(breakdowns)} breakdowns but {len(y)} latencies")
    if np.any(~np.isfinite(y)) or np.any(y <= 0):
        raise CalibrationError("measured latencies must be positive and finite (ms)")
    check_enough_networks(breakdowns, min_share=min_share)
    own, X, fixed = _design(breakdowns, min_share)
    n_scales = len(own) + 1
    w = 1.0 / y
    A, b = X * w[:, None], (y - fixed) * w
    if prior > 0:
        # Pull every scale towards 1 (as strongly as `prior` networks would): kernel types
        # whose time is nearly the same in every network of a space (a classifier, the
        # stem) cannot be told apart from the per-kernel cost, and would otherwise get any
        # value the fit likes, 0 included.
        A = np.vstack([A, np.eye(n_scales, n_scales + 1) * np.sqrt(prior)])
        b = np.concatenate([b, np.full(n_scales, np.sqrt(prior))])
    coef, _ = nnls(A, b)
    # a column no network uses stays at the neutral scale rather than at nnls's 0
    for j in range(n_scales):
        if not X[:, j].any():
            coef[j] = 1.0
    pred = X @ coef + fixed
    rel = pred / y - 1.0
    raw = X[:, :-1].sum(axis=1) + fixed
    info = {"space": space, "networks": int(len(y)),
            "fit_rmspe": float(np.sqrt(np.mean(rel ** 2))),
            "uncalibrated_rmspe": float(np.sqrt(np.mean((raw / y - 1.0) ** 2))),
            "min_share": float(min_share), "prior": float(prior)}
    return Calibration(scales={r: float(c) for r, c in zip(own, coef[:len(own)])},
                       default_scale=float(coef[len(own)]), per_kernel_ms=float(coef[-1]),
                       info=info)


def calibrate(predictor: Any, models: Sequence[Any], latencies_ms: Sequence[float], *,
              input_shape: Sequence[int] | None = None, space: str | None = None,
              min_share: float = 0.03, prior: float = 0.1) -> Calibration:
    """Predict ``models`` with ``predictor`` (uncalibrated) and fit a calibration to their
    measured ``latencies_ms`` (see :func:`fit_calibration`)."""
    bds = _breakdowns(predictor, models, input_shape)
    return fit_calibration(bds, latencies_ms, min_share=min_share, prior=prior, space=space)


def _breakdowns(predictor: Any, models: Sequence[Any],
                input_shape: Sequence[int] | None = None) -> list[Any]:
    """``predictor``'s uncalibrated kernel breakdowns of ``models``."""
    from ..predictor import LatencyPredictor

    base = LatencyPredictor(predictor.package, strict=predictor.strict)
    return [base.predict_kernels(m, input_shape=input_shape) for m in models]


def check_calibration_name(name: str) -> str:
    """``name`` if it can name a calibration (letters, digits, - and _), else a
    :class:`~nnmeter_nas.errors.CalibrationError` naming it."""
    if not isinstance(name, str) or not name or \
            not name.replace("-", "").replace("_", "").isalnum():
        raise CalibrationError(f"calibration name {name!r}: use letters, digits, - and _ "
                               "(--name on the command line)")
    return name


def save_calibration(package_dir: str | Path, name: str, calibration: Calibration) -> Path:
    """Store ``calibration`` as ``name`` in the manifest of the package directory (replacing
    one of that name). The manifest is replaced atomically; the package's files, whose
    checksums it lists, are untouched."""
    check_calibration_name(name)
    path = Path(package_dir) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.setdefault("calibrations", {})[name] = calibration.to_dict()
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(manifest, indent=1) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def measurement_backend(predictor: Any) -> Any:
    """The backend ``predictor``'s package was built with, set up as recorded in its manifest,
    on this host. Raises :class:`~nnmeter_nas.errors.PackageError` for a package that records
    none (not made by the builder, e.g. an imported nn-Meter device: measure its networks on
    that device and use :func:`calibrate`), and :class:`HostMismatchError` when this host
    differs from the build host."""
    from ..errors import PackageError
    from .backends import backend_from_settings, host_mismatch

    built = ((predictor.package.manifest.get("source") or {}).get("backend")) or {}
    if not built.get("name"):
        raise PackageError(
            f"predictor {predictor.name!r} records no measurement backend (it was not made by "
            "the builder), so its device cannot be measured from here; measure networks on "
            "the device yourself and fit with nnmeter_nas.builder.calibrate.calibrate()")
    backend = backend_from_settings(built)
    diff = host_mismatch(built, backend.settings)
    if diff:
        raise HostMismatchError(
            f"predictor {predictor.name!r} was built on another host ("
            + ", ".join(f"{k}: built {a!r}, here {b!r}" for k, (a, b) in diff.items())
            + "); calibrate it on its own host, or build a predictor for this one with "
              "`nnmeter-nas predictors build`")
    return backend


def calibrate_on_device(predictor: Any, models: Sequence[bytes], *, space: str,
                        passes: int = 10, pause_s: float = 1.0, seed: int = 0,
                        min_share: float = 0.03, prior: float = 0.1,
                        progress: bool = True,
                        backend: Any = None) -> tuple[Calibration, list[float]]:
    """Measure ``models`` (serialized ONNX networks of one search space) on this host with the
    predictor's own backend (:func:`measurement_backend`) and fit a calibration for ``space``
    on them. Each network is the median of ``passes`` interleaved visits ``pause_s`` seconds
    apart (:func:`~nnmeter_nas.builder.network_timing.measure_interleaved`). ``backend``: the
    one :func:`measurement_backend` returned, when the caller checked the host first. Returns
    the calibration and the measured latencies (ms)."""
    from tqdm.auto import tqdm

    from . import network_timing

    check_calibration_name(space)
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
        raise CalibrationError(f"passes={passes!r}: measure every network at least once "
                               "(--passes on the command line)")
    if not pause_s >= 0:
        raise CalibrationError(f"pause_s={pause_s!r}: the pause between passes must be >= 0 "
                               "seconds (--pause on the command line)")
    if backend is None:
        backend = measurement_backend(predictor)
    # the networks' breakdowns first: too few networks are refused before they are measured
    bds = _breakdowns(predictor, list(models))
    check_enough_networks(bds, min_share=min_share)
    bar = tqdm(total=passes, desc=f"measuring {len(models)} networks", unit="pass",
               disable=not progress, dynamic_ncols=True)
    try:
        visits = network_timing.measure_interleaved(
            backend, list(models), passes, seed=seed, pause_s=pause_s,
            on_pass=lambda p: bar.update(1))
    finally:
        bar.close()
    truth = [float(np.median(v)) for v in visits]
    cal = fit_calibration(bds, truth, min_share=min_share, prior=prior, space=space)
    measured_on = {k: backend.settings.get(k) for k in ("processor", "isa", "version")}
    return replace(cal, info={**cal.info, "passes": passes, "measured_on": measured_on}), truth


def store_calibration(predictor: Any, name: str, calibration: Calibration) -> Path:
    """Store ``calibration`` as ``name`` in ``predictor``'s package and return the package
    directory. A built-in package (inside the library) or a zipped one is first installed
    into the user cache (``nnmeter-nas predictors list`` shows it; it then wins over the
    built-in one of the same name); an installed or other package directory is updated in
    place."""
    from ..packages.registry import builtin_dir, install_predictor

    path = Path(predictor.package.path)
    if not path.is_dir() or builtin_dir().resolve() in path.resolve().parents:
        path = install_predictor(path)
    save_calibration(path, name, calibration)
    return path
