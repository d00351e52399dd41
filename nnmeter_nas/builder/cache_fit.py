"""Fit a :class:`~nnmeter_nas.cache_model.CacheModel` and write a two-regime package.

A two-regime package joins two builds of one device: one timed with warm caches (the default
``flush_mb=0``) and one timed after a cache flush before every run (``flush_mb=16``). Which of
the two a network's kernels resemble depends on how much weight the network holds, so the
mix is fitted on random networks (:mod:`~nnmeter_nas.builder.compose`, none a search space's
or the zoo's) measured whole on the build host::

    from nnmeter_nas.builder.cache_fit import join_regimes

    join_regimes("runs/warm-pkg", "runs/cold-pkg", "runs/pkg", networks=160)

The result is the warm package (its fusion rules, manifest and regressors) with the cold
regressors under ``kernels-cold/`` and the fitted model under ``cache_model``. Calibrations
of the warm package are dropped: they were fitted to warm predictions.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..cache_model import CacheModel
from ..errors import BuildConfigError

#: The fewest networks a cache model is fitted on (a hundred or so is what it needs).
MIN_CACHE_NETWORKS = 8

__all__ = ["build_two_regimes", "cache_model_summary", "fit_cache_model", "join_regimes",
           "regime_totals"]

log = logging.getLogger("nnmeter_nas.builder")


def fit_cache_model(warm_ms: Sequence[float], cold_ms: Sequence[float],
                    weight_mib: Sequence[float], measured_ms: Sequence[float], *,
                    n_kernels: Sequence[float] | None = None,
                    fixed_ms: Sequence[float] | None = None,
                    info: dict[str, Any] | None = None) -> CacheModel:
    """Fit ``midpoint_mib``, ``slope``, ``scale`` (and ``per_kernel_ms`` when ``n_kernels`` is
    given) so that, for every network, ``scale * (warm + share(W) * (cold - warm)) +
    per_kernel_ms * n_kernels + fixed`` matches the measurement in the least squares of
    ``log(predicted / measured)``.

    ``warm_ms`` and ``cold_ms``: each network's kernel sums (ms) under the warm and the cold
    regressors; ``weight_mib``: its float32 weights (MiB); ``n_kernels``: its predicted
    kernels; ``fixed_ms``: what neither regime predicts (free and missing kernels, the
    package's per-network cost). Needs networks that span small and large weight sizes (a
    hundred or more: the share's curve is loosely pinned by a few dozen).
    """
    from scipy.optimize import minimize

    warm, cold = np.asarray(warm_ms, float), np.asarray(cold_ms, float)
    w, y = np.asarray(weight_mib, float), np.asarray(measured_ms, float)
    fixed = np.zeros_like(y) if fixed_ms is None else np.asarray(fixed_ms, float)
    count = np.zeros_like(y) if n_kernels is None else np.asarray(n_kernels, float)
    if not (len(warm) == len(cold) == len(w) == len(y) == len(fixed) == len(count)):
        raise ValueError("warm_ms, cold_ms, weight_mib, measured_ms (and n_kernels, fixed_ms) "
                         "must have one value per network")
    if len(y) < MIN_CACHE_NETWORKS:
        raise ValueError(f"{len(y)} networks: fit a cache model on a hundred or so")
    if np.any(~np.isfinite(y)) or np.any(y <= 0) or np.any(w <= 0):
        raise ValueError("measured latencies (ms) and weight sizes (MiB) must be positive")
    lw = np.log(w)

    def predict(theta: np.ndarray) -> np.ndarray:
        log_mid, slope, log_scale, per_kernel_us = theta
        share = 1.0 / (1.0 + np.exp(-slope * (lw - log_mid)))
        return (np.exp(log_scale) * (warm + share * (cold - warm)) + fixed
                + 1e-3 * per_kernel_us * count)

    # the midpoint stays within a factor e^4 (55x) of the weight sizes seen
    lo, hi = lw.min() - 4.0, lw.max() + 4.0

    def loss(theta: np.ndarray) -> float:
        if not (0.05 <= theta[1] <= 20.0 and theta[3] >= 0 and lo <= theta[0] <= hi
                and -3.0 <= theta[2] <= 3.0):
            return 1e9
        p = predict(theta)
        if np.any(p <= 0):
            return 1e9
        return float(np.mean(np.log(p / y) ** 2))

    starts = [(m, s, 0.0, 0.2 if n_kernels is not None else 0.0)
              for m in np.percentile(lw, [25, 50, 75]) for s in (0.5, 1.0, 3.0)]
    if n_kernels is None:  # the per-kernel cost stays 0
        def fit(x0):
            r = minimize(lambda t: loss(np.append(t, 0.0)), np.asarray(x0[:3]),
                         method="Nelder-Mead",
                         options={"xatol": 1e-4, "fatol": 1e-10, "maxiter": 4000})
            r.x = np.append(r.x, 0.0)
            return r
    else:
        def fit(x0):
            return minimize(loss, np.asarray(x0), method="Nelder-Mead",
                            options={"xatol": 1e-4, "fatol": 1e-10, "maxiter": 8000})
    best = min((fit(x0) for x0 in starts), key=lambda r: r.fun)
    log_mid, slope, log_scale, per_kernel_us = best.x
    rel = predict(best.x) / y - 1.0
    warm_rel = (warm + fixed) / y - 1.0
    fit_info = {"networks": int(len(y)),
                "weight_mib_range": [float(w.min()), float(w.max())],
                "fit_rmspe": float(np.sqrt(np.mean(rel ** 2))),
                "fit_within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
                "warm_only_rmspe": float(np.sqrt(np.mean(warm_rel ** 2)))}
    return CacheModel(midpoint_mib=float(np.exp(log_mid)), slope=float(slope),
                      scale=float(np.exp(log_scale)), per_kernel_ms=1e-3 * float(per_kernel_us),
                      info={**fit_info, **(info or {})})


def _decisions(rules: Any) -> dict[str, Any]:
    """Which operator pairs fuse (the measured latencies aside)."""
    return {k: (v or {}).get("obey") for k, v in rules.to_dict().items()}


def regime_totals(warm_predictor: Any, cold_predictor: Any, models: Sequence[Any]
                  ) -> dict[str, np.ndarray]:
    """Per network, as :func:`fit_cache_model` takes them: ``warm_ms`` and ``cold_ms`` (kernel
    sums; kernel types the cold package lacks count warm in both), ``weight_mib``,
    ``n_kernels`` (predicted kernels) and ``fixed_ms``. Both predictors must predict without
    a cache model."""
    out: dict[str, list[float]] = {k: [] for k in ("warm_ms", "cold_ms", "weight_mib",
                                                   "n_kernels", "fixed_ms")}
    for m in models:
        bw = warm_predictor.predict_kernels(m)
        bc = cold_predictor.predict_kernels(m)
        cold_ms = {k.name: k.latency_ms for k in bc if k.status == "predicted"}
        w = c = 0.0
        n = 0
        f = bw.overhead_ms
        for k in bw:
            if k.status != "predicted":
                f += k.latency_ms
                continue
            w += k.latency_ms
            c += cold_ms.get(k.name, k.latency_ms)
            n += 1
        for key, v in zip(out, (w, c, bw.weight_mib, n, f)):
            out[key].append(v)
    return {k: np.asarray(v, dtype=float) for k, v in out.items()}


def join_regimes(warm_package: str | Path, cold_package: str | Path, output: str | Path, *,
                 networks: int = 160, seed: int = 0, passes: int = 10, pause_s: float = 0.5,
                 progress: bool = True,
                 scale_to_build_state: bool = True) -> tuple[Path, CacheModel]:
    """Measure ``networks`` composed networks on this host, fit the cache model that mixes
    ``warm_package``'s and ``cold_package``'s regressors, and write the two-regime package
    to ``output`` (replaced atomically). Both packages must come from the builder, with the
    same backend, feature set and fusion rules, built on this host (measured networks of
    another host would fit another device). The networks' latencies are scaled by the
    reference network's time during the warm build over its time now (timed warm before and
    after the passes), so the model describes the machine in the state its kernels were timed
    in (``scale_to_build_state=False``: as measured now). Returns the package path and the
    model."""
    from ..graph.torch_export import export_onnx
    from ..packages.format import PredictorPackage
    from ..predictor import LatencyPredictor
    from .calibrate import measurement_backend
    from .compose import composed_networks

    wp, cp = PredictorPackage.load(warm_package), PredictorPackage.load(cold_package)
    cold_flush_mb = _check_joinable(wp, cp)
    warm = LatencyPredictor(wp, cache_model=False)
    cold = LatencyPredictor(cp, cache_model=False)
    backend = measurement_backend(warm)

    t0 = time.time()
    models = [export_onnx(n.module, n.input_shape).SerializeToString()
              for n in _bar(composed_networks(networks, seed), "exporting networks", progress)]
    measured, ref_now = _measure(backend, models, passes, seed, pause_s, progress)
    # The kernels were timed with the machine in one state (the reference network's median
    # during the build, in the manifest); a shared machine is a few percent faster or slower
    # an hour later. The networks' latencies are brought to the build's state, so that the
    # model's scale describes the device, not the hour it was fitted in.
    ref_build = (((wp.manifest.get("source") or {}).get("machine_state") or {})
                 .get("reference_ms") or {}).get("median")
    # scale_to_build_state=False fits the networks as measured now (for hosts whose
    # networks do not slow down with the reference workload; docs/results.md, AVX2 rebuild)
    factor = float(ref_build) / ref_now if ref_build and scale_to_build_state else 1.0
    tot = regime_totals(warm, cold, models)
    model = fit_cache_model(tot["warm_ms"], tot["cold_ms"], tot["weight_mib"],
                            [ms * factor for ms in measured], n_kernels=tot["n_kernels"],
                            fixed_ms=tot["fixed_ms"], info={
        "composed_seed": seed, "passes": passes, "cold_flush_mb": cold_flush_mb,
        "reference_ms": {"build": ref_build, "fit": ref_now, "latencies_scaled_by": factor},
        "fitted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.time() - t0, 1)})
    log.info("cache model: %s", cache_model_summary(model))
    return _write_joined(wp, cp, model, output), model


def _bar(items: Sequence[Any], desc: str, progress: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, disable=not progress, dynamic_ncols=True)


def _check_joinable(wp: Any, cp: Any) -> float:
    """Refuse two packages that are not the warm and cold builds of one device; returns the
    cold one's flush (MiB)."""
    from ..errors import PackageError
    from .backends import host_mismatch

    for p in (wp, cp):
        if p.cold_regressors:
            raise PackageError(f"{p.path} already holds two regimes; join single-regime builds")
    if wp.feature_set != cp.feature_set:
        raise PackageError(f"feature sets differ: {wp.path} {wp.feature_set}, {cp.path} "
                           f"{cp.feature_set}; build both with the same")
    if _decisions(wp.fusion_rules) != _decisions(cp.fusion_rules):
        raise PackageError(f"{wp.path} and {cp.path} have different fusion rules; build the "
                           "cold one with --fusion-rules of the warm one")
    backends = [(p.manifest.get("source") or {}).get("backend") or {} for p in (wp, cp)]
    diff = host_mismatch(backends[0], backends[1])
    if diff:
        raise PackageError(f"{wp.path} and {cp.path} were built with other backends or hosts: "
                           f"{diff}")
    flush = [float(((b.get("timing") or {}).get("flush_mb")) or 0.0) for b in backends]
    if not flush[1] > flush[0]:
        raise PackageError(f"{cp.path} is not colder than {wp.path} (flush_mb {flush[1]} vs "
                           f"{flush[0]}): build it with --flush-mb 16")
    return flush[1]


def _measure(backend: Any, models: list[bytes], passes: int, seed: int, pause_s: float,
             progress: bool) -> tuple[list[float], float]:
    """Each model's median latency (ms) over ``passes`` interleaved visits, and the reference
    network's time (ms) timed as the build timed it, before and after the passes
    (:func:`~nnmeter_nas.builder.measure.reference_state_ms`; the median of both)."""
    from tqdm.auto import tqdm

    from . import network_timing
    from .measure import reference_state_ms

    before = reference_state_ms(backend)
    bar = tqdm(total=passes, desc=f"measuring {len(models)} networks", unit="pass",
               disable=not progress, dynamic_ncols=True)
    try:
        visits = network_timing.measure_interleaved(backend, models, passes, seed=seed,
                                                    pause_s=pause_s,
                                                    on_pass=lambda p: bar.update(1))
    finally:
        bar.close()
    ref = float(np.median([before, reference_state_ms(backend)]))
    return [float(np.median(v)) for v in visits], ref


def _write_joined(wp: Any, cp: Any, model: CacheModel, output: str | Path) -> Path:
    """The warm package with the cold one's regressors and ``model``, written to ``output``.
    The warm package's calibrations are dropped: they were fitted to warm predictions."""
    from ..packages.format import write_package

    m = wp.manifest
    info = {r: {k: v for k, v in i.items() if k != "file"} for r, i in m["kernels"].items()}
    cold_info = {r: {k: v for k, v in i.items() if k != "file"}
                 for r, i in cp.manifest["kernels"].items()}
    source = {**(m.get("source") or {}), "cold_regime": cp.manifest.get("source") or {}}
    own = {"format", "format_version", "name", "version", "device", "framework",
           "description", "feature_set", "units", "kernels", "free_kernel_types", "source",
           "files", "calibrations", "cold_kernels", "cache_model"}
    return write_package(output, name=wp.name, version=wp.version, device=wp.device,
                         framework=m.get("framework", ""), regressors=wp.regressors,
                         fusion_rules=wp.fusion_rules, feature_set=wp.feature_set,
                         description=m.get("description", ""), kernel_info=info,
                         free_kernel_types=sorted(wp.free_kernel_types), source=source,
                         extra={k: v for k, v in m.items() if k not in own}, overwrite=True,
                         cold_regressors=cp.regressors, cold_kernel_info=cold_info,
                         cache_model=model)


def cache_model_summary(model: CacheModel) -> str:
    """One line: the fitted parameters and the fit's error."""
    i = model.info
    return (f"midpoint {model.midpoint_mib:.1f} MiB, slope {model.slope:.2f}, scale "
            f"{model.scale:.3f}, +{1e3 * model.per_kernel_ms:.2f} us per kernel; on "
            f"{i.get('networks', '?')} networks RMSPE "
            f"{100 * i.get('fit_rmspe', float('nan')):.1f}% (warm kernels only "
            f"{100 * i.get('warm_only_rmspe', float('nan')):.1f}%)")


def build_two_regimes(config: Any, *, cold_flush_mb: float = 16.0, networks: int = 160,
                      passes: int = 10, refit: bool = False,
                      **kwargs: Any) -> tuple[Path, CacheModel]:
    """Build ``config`` twice, warm and with ``cold_flush_mb`` MiB flushed before every kernel
    run (same fusion rules, measurements under ``work_dir`` and ``work_dir/cold``; each
    resumable), then :func:`join_regimes` into ``config.output``. ``refit=True`` measures no
    kernel again: both regimes are fitted from their stores as they are (the networks of the
    join are measured anew). Returns the package path and the fitted cache model."""
    from dataclasses import replace

    from .build import build_predictor

    if config.output is None:
        raise ValueError("build_two_regimes needs config.output")
    if isinstance(networks, bool) or not isinstance(networks, int) or \
            networks < MIN_CACHE_NETWORKS:
        raise BuildConfigError(f"networks={networks!r}: the cache model is fitted on at least "
                               f"{MIN_CACHE_NETWORKS} networks (a hundred or so); checked "
                               "before the two builds, not after them")
    if cold_flush_mb <= config.flush_mb:
        raise ValueError(f"cold_flush_mb ({cold_flush_mb}) must exceed flush_mb "
                         f"({config.flush_mb})")
    work = Path(config.work_dir)
    warm = build_predictor(replace(config, output=work / "warm-package"), refit=refit,
                           **kwargs)
    if warm.package is None:
        raise RuntimeError(f"the warm build in {work} wrote no package (nothing measured?)")
    cold_cfg = replace(config, work_dir=work / "cold", output=work / "cold-package",
                       flush_mb=cold_flush_mb,
                       fusion_rules=Path(warm.package) / "fusion_rules.json")
    cold = build_predictor(cold_cfg, refit=refit, **kwargs)
    if cold.package is None:
        raise RuntimeError(f"the cold build in {work / 'cold'} wrote no package")
    return join_regimes(warm.package, cold.package, config.output, networks=networks,
                        seed=config.seed, passes=passes, progress=config.progress)
