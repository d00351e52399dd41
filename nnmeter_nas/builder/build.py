"""Build a predictor package for a device: fusion rules, kernel sampling, fitting, writing.

The build is resumable: every measurement is appended to ``<work_dir>/measurements.jsonl``
as it is taken (see :mod:`~nnmeter_nas.builder.store`); running the same build again skips
what is there and measures the rest. Configurations are drawn from seeded generators, so a
resumed build proposes the same ones; adaptive rounds are computed from the measurements of
earlier phases only, so they are reproducible too.

Phases:

1. fusion rules, measured (:func:`~nnmeter_nas.builder.fusion.detect_fusion_rules`) or given;
2. prior sampling: ``n_prior`` configurations split over kernel specs by their weights,
   then the other variants (activations) of ``variant_fraction`` of them;
3. ``adaptive_rounds`` rounds: fit, find the configurations with the largest cross-validated
   error, measure perturbations of them;
4. final fit of every regressor (model picked by cross-validation), FLOPs-only baseline,
   package written with the engine's writer.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import BuildConfigError
from ..kernels import FusionRules
from ..packages.format import ensure_writable_dir, os_error_text
from .backends import Backend, TimingPlan, get_backend
from .fitting import (DEFAULT_CANDIDATES, KernelFit, fit_flops_baseline, fit_kernel,
                      kernel_flops)
from .kernel_specs import KernelSpec, default_specs
from .measure import KernelMeasurer, KernelMismatchError, config_key, sample_configs
from .store import MeasurementStore, StoreMismatchError

log = logging.getLogger("nnmeter_nas.builder")

BUILDER_VERSION = "1"
STORE_NAME = "measurements.jsonl"


@dataclass
class BuildConfig:
    """Everything a build depends on.

    ``n_prior`` prior configurations are split over ``specs`` by their weights (at least
    ``min_per_spec`` each); every adaptive round measures ``adaptive_fraction`` of a spec's
    prior count more, around its worst-predicted configurations. ``time_budget_s`` (wall
    time of the measurement phases) stops proposing new measurements once spent; what was
    measured is fitted. ``batch`` configurations are timed together, their repeats
    interleaved.
    """

    name: str
    work_dir: Path
    output: Path | None = None
    version: str = "1.0"
    device: str = ""
    description: str = ""
    backend: str = "onnxruntime-cpu"
    backend_options: dict[str, Any] = field(default_factory=dict)
    specs: Sequence[str] | None = None
    n_prior: int = 3000
    min_per_spec: int = 20
    adaptive_rounds: int = 2
    adaptive_fraction: float = 0.15
    adaptive_error: float = 0.05
    # Share of the prior configurations of specs with variants (convolutions: the activation)
    # also measured with every other variant, so that the regressor learns the choice's effect
    # from pairs that differ in it alone (ReLU6 costs 1.25-1.6x a ReLU on onnxruntime CPU).
    variant_fraction: float = 0.15
    seed: int = 0
    batch: int = 8
    feature_set: str = "nnmeter-nas-3"
    candidates: Sequence[str] = DEFAULT_CANDIDATES
    max_kernel_bytes: int = 1_500_000
    fusion_rules: str | Path | None = None
    plan: TimingPlan | None = None
    # MiB of memory written before every timed and profiled run of every kernel, so that it
    # finds its weights evicted from the caches, as the rest of a large network leaves them
    # (its input is written by the harness's stand-in after the flush, as by the operator
    # before it in a network). 0 (default): kernels are timed with warm caches. A package
    # built this way alone over-predicts whole networks (AVX-512 host, 16 MiB: SPOS +16%,
    # NAS-Bench-201 cells +54%); it is meant as the cold regime of a two-regime package
    # (builder.cache_fit.build_two_regimes), mixed with the warm one by a network's weights.
    flush_mb: float = 0.0
    # The same for cold-weights specs (the classifier, whose megabytes of weights a network
    # reads once per inference), when larger than ``flush_mb``; above the last-level cache.
    cold_flush_mb: float = 64.0
    time_budget_s: float | None = None
    progress: bool = True
    # Scale every kernel timing by (the build's median reference time) / (the reference time
    # in its own batch): the reference network (measure.reference_model) is timed in every
    # batch, so a batch timed while other processes' memory traffic slowed the machine is
    # brought back to the build's typical state instead of teaching the regressors noise.
    reference_normalize: bool = True

    def __post_init__(self) -> None:
        self.work_dir = Path(self.work_dir)
        if self.output is not None:
            self.output = Path(self.output)
        self.check()

    def check(self) -> None:
        """Raise :class:`~nnmeter_nas.errors.BuildConfigError` naming the first setting that
        cannot work (a count below its minimum, a negative fraction or budget, an empty or
        repeated kernel spec list), before anything is measured."""
        def bad(name: str, value: Any, want: str) -> BuildConfigError:
            return BuildConfigError(f"BuildConfig.{name} is {value!r}; it must be {want}")

        for name, least in (("n_prior", 1), ("min_per_spec", 1), ("batch", 1),
                            ("adaptive_rounds", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise bad(name, value, f"an int of at least {least}")
        for name in ("adaptive_fraction", "adaptive_error", "variant_fraction", "flush_mb",
                     "cold_flush_mb"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise bad(name, value, "a finite number >= 0")
        b = self.time_budget_s
        if b is not None and (not isinstance(b, (int, float)) or not 0 < b < float("inf")):
            raise bad("time_budget_s", b, "a number of seconds above 0 (None: no budget)")
        if self.specs is not None:
            if isinstance(self.specs, str):
                raise bad("specs", self.specs, "a list of kernel spec names, not a string")
            specs = list(self.specs)
            if not specs or not all(isinstance(n, str) and n.strip() for n in specs):
                raise bad("specs", self.specs, "a non-empty list of kernel spec names (None: "
                                               "all of them; see kernel_specs())")


@dataclass
class BuildResult:
    package: Path | None
    fits: dict[str, KernelFit]
    n_measurements: int
    n_failures: int
    flops_baseline: dict[str, float]
    seconds: float


def _progress(total: int, desc: str, enabled: bool, unit: str = "cfg"):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True,
                smoothing=0.05)


def check_spec_names(names: Sequence[str], known: Iterable[str]) -> None:
    """Raise :class:`~nnmeter_nas.errors.BuildConfigError` naming the first of ``names`` that
    is not a kernel spec of ``known`` (with the closest known names)."""
    from ..packages.registry import did_you_mean

    known = sorted(known)
    for name in names:
        if name not in known:
            raise BuildConfigError(
                f"unknown kernel spec {name!r};{did_you_mean(name, known)} known kernel specs: "
                f"{', '.join(known)} (`nnmeter-nas predictors build --list-kernels` describes "
                "them)")


def _fused(rules: FusionRules) -> tuple[set[str], list[tuple[str, ...]], int]:
    """What of ``rules`` decides how a network is cut into kernels."""
    return {"_".join(p) for p in rules.pairs}, sorted(rules.chains), rules.mon


def make_work_dir(work_dir: str | Path) -> Path:
    """Create the build's work folder (where its measurements are kept); a path that is a file
    or cannot be created is named in a :class:`~nnmeter_nas.errors.BuildConfigError`."""
    work_dir = Path(work_dir)
    try:
        ensure_writable_dir(work_dir)
    except OSError as exc:
        what = "it is a file, not a folder" if work_dir.is_file() else os_error_text(exc)
        raise BuildConfigError(
            f"cannot keep the build's measurements in {work_dir}: {what}; choose a folder you "
            "can write to (--work-dir), or the one an interrupted build used, to resume it"
        ) from None
    return work_dir


def _round_robin(groups: Sequence[Sequence[Any]]) -> list[Any]:
    out = []
    iters = [list(g) for g in groups]
    i = 0
    while any(iters):
        for g in iters:
            if i < len(g):
                out.append(g[i])
        i += 1
        if all(i >= len(g) for g in iters):
            break
    return out


class Builder:
    """Runs a :class:`BuildConfig` (see the module docstring)."""

    def __init__(self, config: BuildConfig, *, backend: Backend | None = None,
                 specs: dict[str, KernelSpec] | None = None) -> None:
        self.cfg = config
        self.backend = backend or get_backend(config.backend, **config.backend_options)
        if config.plan is not None:
            self.backend.plan = config.plan
        if config.flush_mb > 0:
            # the profiled share of a kernel is taken under the backend's plan too
            self.backend.plan = self._flushed(self.backend.plan, config.flush_mb)
        self._specs_override = specs
        if config.specs is not None:  # spec names do not depend on the fusion rules
            check_spec_names(config.specs, specs or default_specs())
        self.failures = 0
        self._t0 = time.time()

    # ------------------------------------------------------------------ helpers
    def _out_of_time(self) -> bool:
        b = self.cfg.time_budget_s
        return b is not None and time.time() - self._t0 > b

    def header(self) -> dict[str, Any]:
        """What the store's measurements depend on (backend settings, clock, features)."""
        return {**self.backend.settings, "name": self.backend.name,
                "clock": self.backend.plan.clock, "feature_set": self.cfg.feature_set,
                "flush_mb": float(self.cfg.flush_mb), "builder_version": BUILDER_VERSION}

    def open_store(self) -> MeasurementStore:
        return MeasurementStore(self.cfg.work_dir / STORE_NAME, header=self.header())

    def fusion_rules(self, store: MeasurementStore) -> FusionRules:
        stored = store.records(kind="fusion_rules")
        src = self.cfg.fusion_rules
        given = None if src is None else (
            FusionRules.from_file(src) if isinstance(src, (str, Path)) else src)
        if stored:
            rules = FusionRules.from_dict(stored[-1]["rules"])
            if given is not None and _fused(given) != _fused(rules):
                ours, theirs = _fused(rules)[0], _fused(given)[0]
                raise StoreMismatchError(
                    f"{store.path} was measured with other fusion rules than {src} gives "
                    f"(fused in the store only: {sorted(ours - theirs) or 'none'}; in {src} "
                    f"only: {sorted(theirs - ours) or 'none'}), and its kernels were cut by "
                    "them; leave --fusion-rules out to resume with the stored rules, or use "
                    "another --work-dir to build with these")
            return rules
        if given is not None:
            rules = given
            raw, how = rules.to_dict(), f"given ({src})"
        else:
            from .fusion import detect_fusion_rules

            log.info("detecting fusion rules by measurement")
            bar = _progress(0, "fusion rules", self.cfg.progress)

            def tick(done: int, total: int) -> None:
                bar.total = total
                bar.n = done
                bar.refresh()

            rules, raw = detect_fusion_rules(self.backend, progress=tick)
            bar.close()
            how = "measured"
        store.append({"type": "fusion_rules", "rules": raw, "how": how, "time": time.time()})
        return FusionRules.from_dict(raw)

    def specs(self, rules: FusionRules) -> dict[str, KernelSpec]:
        specs = self._specs_override or default_specs(rules)
        if self.cfg.specs is not None:
            check_spec_names(self.cfg.specs, specs)
            specs = {s: specs[s] for s in self.cfg.specs}
        return specs

    def prior_counts(self, specs: dict[str, KernelSpec]) -> dict[str, int]:
        total_w = sum(s.weight for s in specs.values())
        return {n: max(self.cfg.min_per_spec,
                       int(round(self.cfg.n_prior * s.weight / total_w)))
                for n, s in specs.items()}

    # ------------------------------------------------------------------ measuring
    def measure_configs(self, measurer: KernelMeasurer, store: MeasurementStore,
                        jobs: list[tuple[KernelSpec, dict]], phase: str, desc: str) -> int:
        """Measure ``(spec, config)`` jobs not yet in the store; returns how many were added."""
        failed = {r["key"] for r in store.records(kind="failure")}
        todo = [(s, c) for s, c in jobs
                if config_key(s.name, c) not in store and config_key(s.name, c) not in failed]
        added = 0
        bar = _progress(len(todo), desc, self.cfg.progress)
        try:
            for start in range(0, len(todo), self.cfg.batch):
                if self._out_of_time():
                    log.warning("time budget spent: %d configurations of phase %s left "
                                "unmeasured", len(todo) - start, phase)
                    break
                prepared = []
                for spec, cfg in todo[start:start + self.cfg.batch]:
                    try:
                        prepared.append(measurer.prepare(spec, cfg))
                    except Exception as exc:  # export errors, kernel mismatches
                        self.failures += 1
                        if not isinstance(exc, KernelMismatchError):
                            log.warning("could not prepare %s %s: %s", spec.name, cfg, exc)
                        else:
                            log.debug("%s", exc)
                        store.append({"type": "failure", "key": config_key(spec.name, cfg),
                                      "spec": spec.name, "config": cfg, "phase": phase,
                                      "error": f"{type(exc).__name__}: {exc}"[:500]})
                        bar.update(1)
                cold = {s.name for s, _ in todo[start:start + self.cfg.batch] if s.cold_weights}
                warm_batch = [p for p in prepared if p.spec not in cold]
                cold_batch = [p for p in prepared if p.spec in cold]
                records = measurer.measure(warm_batch, phase=phase)
                if cold_batch:
                    records += measurer.measure(cold_batch, phase=phase, plan=self.cold_plan())
                for rec in records:
                    store.append(rec.to_dict())
                    added += 1
                    bar.update(1)
        finally:
            bar.close()
        return added

    @staticmethod
    def _flushed(plan: TimingPlan, flush_mb: float) -> TimingPlan:
        """``plan`` with caches flushed before every run, and few runs per round (a flush
        costs a millisecond or more)."""
        return replace(plan, flush_mb=flush_mb, runs_per_round=min(plan.runs_per_round, 2),
                       max_runs_per_round=min(plan.max_runs_per_round, 3))

    @property
    def _cold_flush_mb(self) -> float:
        return max(self.cfg.flush_mb, self.cfg.cold_flush_mb)

    def cold_plan(self) -> TimingPlan:
        """The timing plan of cold-weights specs."""
        return self._flushed(self.backend.plan, self._cold_flush_mb)

    def flush_mb_of(self, spec: KernelSpec) -> float:
        """MiB flushed before every run of ``spec``'s kernels."""
        return self._cold_flush_mb if spec.cold_weights else self.cfg.flush_mb

    # ------------------------------------------------------------------ fitting
    def training_data(self, store: MeasurementStore, regressor: str,
                      phases: Iterable[str] | None = None, *,
                      medians: dict[float, float] | None = None
                      ) -> tuple[np.ndarray, np.ndarray, list[dict]]:
        """Features ``X`` (n, n_features), kernel latencies ``y`` (n,) in ms, and the records
        of ``regressor`` in ``phases`` (all when None); latencies reference-normalised when
        the config asks for it (:func:`reference_factors`). ``medians``: the store's
        :func:`reference_medians` (ms per cache flush in MiB), when the caller computed them
        for several regressors; computed here when None."""
        wanted = None if phases is None else set(phases)
        recs = [r for r in store.records() if r["regressor"] == regressor and
                (wanted is None or r.get("phase") in wanted)]
        X = np.asarray([r["features"] for r in recs], dtype=float)
        y = np.asarray([r["latency_ms"] for r in recs], dtype=float)
        if self.cfg.reference_normalize and len(y):
            if medians is None:
                medians = reference_medians(store)
            y = y * reference_factors(recs, medians)
        return X, y, recs

    def _medians(self, store: MeasurementStore) -> dict[float, float] | None:
        """The store's reference medians when latencies are normalised (else None)."""
        return reference_medians(store) if self.cfg.reference_normalize else None

    def fit_all(self, store: MeasurementStore, phases: Iterable[str] | None = None,
                *, quick: bool = False) -> dict[str, KernelFit]:
        phases = None if phases is None else list(phases)
        regs = sorted({r["regressor"] for r in store.records()})
        medians = self._medians(store)  # over the whole store, once for every regressor
        fits = {}
        # minutes in a full build (19 regressors, thousands of measurements), so it gets a bar
        # with an ETA like the measuring phases
        bar = _progress(len(regs), "fitting (quick)" if quick else "fitting", self.cfg.progress,
                        unit="regressor")
        try:
            for reg in regs:
                bar.set_postfix_str(reg)
                X, y, _ = self.training_data(store, reg, phases, medians=medians)
                if len(y) < 4:
                    log.warning("regressor %s: only %d measurements, not fitted", reg, len(y))
                else:
                    cands = ("gbm-log",) if quick else tuple(self.cfg.candidates)
                    fits[reg] = fit_kernel(reg, X, y, candidates=cands, seed=self.cfg.seed,
                                           max_bytes=self.cfg.max_kernel_bytes)
                bar.update(1)
        finally:
            bar.close()
        return fits

    def variant_jobs(self, per_spec: list[list[tuple[KernelSpec, dict]]]
                     ) -> list[tuple[KernelSpec, dict]]:
        """The other variants of ``variant_fraction`` of each spec's prior configurations
        (seeded per spec, so a resumed build proposes the same)."""
        jobs: list[list[tuple[KernelSpec, dict]]] = []
        for prior in per_spec:
            if not prior or prior[0][0].variants is None or self.cfg.variant_fraction <= 0:
                continue
            spec = prior[0][0]
            rng = random.Random(f"{self.cfg.seed}:{spec.name}:variants")
            mine = [(spec, v) for _, cfg in prior if rng.random() < self.cfg.variant_fraction
                    for v in spec.variants(cfg)
                    if spec.max_flops is None or spec.flops(v) <= spec.max_flops]
            jobs.append(mine)
        return _round_robin(jobs)

    def adaptive_jobs(self, store: MeasurementStore, specs: dict[str, KernelSpec],
                      counts: dict[str, int], rnd: int) -> list[tuple[KernelSpec, dict]]:
        """Perturbations of the worst-predicted configurations (cross-validated error of a
        model fitted on the phases before round ``rnd``)."""
        phases = ["prior", "variants"] + [f"adaptive-{i}" for i in range(1, rnd)]
        fits = self.fit_all(store, phases, quick=True)
        medians = self._medians(store)
        jobs: list[list[tuple[KernelSpec, dict]]] = []
        for name, spec in specs.items():
            want = int(round(counts[name] * self.cfg.adaptive_fraction))
            recs = [r for r in store.records() if r.get("spec") == name and
                    r.get("phase") in phases]
            fit = fits.get(recs[0]["regressor"]) if recs else None
            if want <= 0 or fit is None:
                continue
            _, _, reg_recs = self.training_data(store, fit.regressor, phases,
                                                 medians=medians)
            err = {r["key"]: abs(e) for r, e in zip(reg_recs, fit.oof_relative_error)}
            ranked = sorted(recs, key=lambda r: -err.get(r["key"], 0.0))
            worst = [r for r in ranked if err.get(r["key"], 0.0) > self.cfg.adaptive_error]
            worst = worst[:max(1, want // 3)] or ranked[:max(1, want // 3)]
            rng = random.Random(f"{self.cfg.seed}:{name}:adaptive-{rnd}")
            seen = set(store.keys)
            mine = []
            for i in range(want):
                base = worst[i % len(worst)]["config"]
                cfg = spec.neighbour(base, rng)
                key = config_key(name, cfg)
                if key not in seen:
                    seen.add(key)
                    mine.append((spec, cfg))
            jobs.append(mine)
            log.info("adaptive round %d: %s: %d configs around %d with |error| > %.0f%% "
                     "(cv rmspe %.3f)", rnd, name, len(mine), len(worst),
                     100 * self.cfg.adaptive_error, fit.validation["rmspe"])
        return _round_robin(jobs)

    # ------------------------------------------------------------------ run
    def run(self) -> BuildResult:
        cfg = self.cfg
        self._t0 = time.time()
        make_work_dir(self.cfg.work_dir)
        log.info("calibrating the backend's per-call cost")
        self.backend.calibrate_overhead()
        store = self.open_store()
        rules = self.fusion_rules(store)
        specs = self.specs(rules)
        counts = self.prior_counts(specs)
        measurer = KernelMeasurer(self.backend, rules, feature_set=cfg.feature_set)

        per_spec = []
        for name, spec in specs.items():
            rng = random.Random(f"{cfg.seed}:{name}:prior")
            per_spec.append([(spec, c) for c in sample_configs(spec, counts[name], rng)])
        self.measure_configs(measurer, store, _round_robin(per_spec), "prior", "prior")
        variants = self.variant_jobs(per_spec)
        if variants and not self._out_of_time():
            self.measure_configs(measurer, store, variants, "variants", "variants")
        for rnd in range(1, cfg.adaptive_rounds + 1):
            if self._out_of_time():
                break
            jobs = self.adaptive_jobs(store, specs, counts, rnd)
            self.measure_configs(measurer, store, jobs, f"adaptive-{rnd}", f"adaptive {rnd}")

        return self._fit_and_write(store, rules)

    def refit(self) -> BuildResult:
        """Fit and write the package from the measurements already in ``work_dir``'s store,
        measuring nothing: for when how timings are fitted changes (e.g.
        ``reference_normalize``) but the timings do not. Raises FileNotFoundError when the
        store is empty."""
        self._t0 = time.time()
        store = MeasurementStore(self.cfg.work_dir / STORE_NAME)
        if len(store) == 0:
            raise FileNotFoundError(f"no measurements in {self.cfg.work_dir / STORE_NAME}")
        stored = store.records(kind="fusion_rules")
        if not stored:
            raise ValueError(f"{store.path} has no fusion rules; run the build first")
        return self._fit_and_write(store, FusionRules.from_dict(stored[-1]["rules"]))

    def _fit_and_write(self, store: MeasurementStore, rules: FusionRules) -> BuildResult:
        cfg = self.cfg
        fits = self.fit_all(store)
        recs = store.records()
        baseline = fit_flops_baseline([kernel_flops(r["regressor"], r["features"]) for r in recs],
                                      [r["latency_ms"] for r in recs]) if recs else {}
        package = None
        if cfg.output is not None and fits:
            package = self.write(store, rules, fits, baseline)
        return BuildResult(package=package, fits=fits, n_measurements=len(recs),
                           n_failures=len(store.records(kind="failure")),
                           flops_baseline=baseline, seconds=time.time() - self._t0)

    def write(self, store: MeasurementStore, rules: FusionRules, fits: dict[str, KernelFit],
              baseline: dict[str, float]) -> Path:
        from ..packages.format import write_package

        recs = store.records()
        folded: dict[str, set[str]] = {}
        for r in recs:
            for t in r.get("folded", []):
                folded.setdefault(t, set()).add(r["spec"])
        free = sorted(t for t in folded if t not in fits)
        phases: dict[str, int] = {}
        for r in recs:
            phases[r.get("phase", "?")] = phases.get(r.get("phase", "?"), 0) + 1
        fusion = store.records(kind="fusion_rules")[-1]
        refs = [r["ref_ms"] for r in recs if r.get("ref_ms")]
        loads = [r["loadavg"] for r in recs if r.get("loadavg") is not None]

        def stats(v: list[float]) -> dict[str, float] | None:
            if not v:
                return None
            p10, p50, p90 = np.percentile(v, [10, 50, 90])
            return {"p10": float(p10), "median": float(p50), "p90": float(p90), "n": len(v)}

        source = {
            "builder": f"nnmeter_nas.builder {BUILDER_VERSION}",
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "backend": self.backend.describe(),
            "fusion_rules": fusion.get("how", "measured"),
            "measurements": {"total": len(recs), "by_phase": phases,
                             "failures": len(store.records(kind="failure"))},
            "latency_definition": (
                "kernel time inside a network: median of interleaved timed runs of the kernel "
                "between 1x1 max-pool stand-ins for convolution neighbours, minus the "
                "backend's per-call cost (timed in the same batch), times the kernel's share "
                "of the profiled operator time (stand-ins and layout conversions at the "
                "model's inputs/outputs excluded)"),
            "folded_kernel_types": {t: sorted(s) for t, s in sorted(folded.items())},
            "machine_state": {
                "reference_ms": stats(refs), "loadavg_1min": stats(loads),
                "note": "latency of builder.measure.reference_model() timed in each batch, and "
                        "the 1-minute load average: how busy the machine was while measuring",
                "kernel_latencies_normalized_to_ms": (
                    {str(k): v for k, v in sorted(reference_medians(store).items())}
                    if self.cfg.reference_normalize else None)},
            "flops_baseline": baseline,
            "config": {k: (str(v) if isinstance(v, Path) else v)
                       for k, v in asdict(self.cfg).items()
                       if k not in ("plan", "work_dir", "output")},
        }
        notes = {t: f"measured as part of spec(s) {sorted(folded[t])}: its cost is included "
                    "in the first kernel of that pattern" for t in free}
        return write_package(
            self.cfg.output, name=self.cfg.name, version=self.cfg.version,
            device=self.cfg.device or self.cfg.name,
            framework=f"{self.backend.settings.get('library', self.backend.name)} "
                      f"{self.backend.settings.get('version', '')}".strip(),
            description=self.cfg.description, regressors={r: f.ensemble for r, f in fits.items()},
            fusion_rules=rules, feature_set=self.cfg.feature_set,
            kernel_info={r: f.info() for r, f in fits.items()}, free_kernel_types=free,
            source=source, extra={"free_kernel_notes": notes}, overwrite=True)


# A batch whose reference time is more than 1.5x off the build's median was timed in a state
# this correction cannot describe (a preempted batch); it is left as measured.
_MAX_REFERENCE_FACTOR = 1.5


def reference_medians(store: MeasurementStore) -> dict[float, float]:
    """Median reference-network time (ms) over the kernel records of ``store``, per cache
    flush the batch was timed with (records' ``flush_mb``; the reference is timed under its
    batch's plan, so a flushed batch's reference is slower): the machine state every timing
    is normalised to."""
    refs: dict[float, list[float]] = {}
    for r in store.records():
        if r.get("ref_ms"):
            refs.setdefault(float(r.get("flush_mb") or 0.0), []).append(float(r["ref_ms"]))
    return {k: float(np.median(v)) for k, v in refs.items()}


def reference_factors(records: Sequence[dict], medians: dict[float, float]) -> np.ndarray:
    """Per record, ``median / ref_ms``: the reference network's median time over the build
    (for the record's cache flush, :func:`reference_medians`) over its time in the record's
    batch; 1 for records without a reference time or with a ratio beyond 1/1.5..1.5."""
    out = np.ones(len(records))
    for i, r in enumerate(records):
        ref, med = r.get("ref_ms"), medians.get(float(r.get("flush_mb") or 0.0))
        if ref and med:
            f = med / float(ref)
            if 1.0 / _MAX_REFERENCE_FACTOR <= f <= _MAX_REFERENCE_FACTOR:
                out[i] = f
    return out


def reuse_measurements(old_work_dir: str | Path, config: BuildConfig, *,
                       backend: Backend | None = None) -> int:
    """Start ``config.work_dir``'s store from the measurements of an earlier build.

    For when the builder's features change but the kernels' timings do not: every kernel
    record of ``old_work_dir`` gets its features recomputed through the engine (export,
    kernel detection, ``extract_features`` with ``config.feature_set``), as a new
    measurement would. Records timed with another cache flush than ``config`` asks for
    their spec are left out, so the build measures them again. The fusion rules are kept.
    Returns the number of records carried over. Refuses a work dir that already has a store.
    """
    builder = Builder(config, backend=backend)
    old = MeasurementStore(Path(old_work_dir) / STORE_NAME)
    if len(old) == 0:
        raise FileNotFoundError(f"no measurements in {Path(old_work_dir) / STORE_NAME}")
    new_path = Path(config.work_dir) / STORE_NAME
    if new_path.exists():
        raise FileExistsError(f"{new_path} exists; reuse_measurements starts a new store")
    old_header = old.header or {}
    mismatch = {k: (old_header.get(k), v) for k, v in builder.header().items()
                if k not in ("feature_set", "builder_version", "flush_mb")
                and old_header.get(k) != v}
    if mismatch:
        raise StoreMismatchError(f"{old.path} was measured with other settings: {mismatch}")
    rules_rec = old.records(kind="fusion_rules")
    if not rules_rec:
        raise ValueError(f"{old.path} has no fusion rules; it cannot be reused")
    rules = FusionRules.from_dict(rules_rec[-1]["rules"])
    specs = builder.specs(rules)
    measurer = KernelMeasurer(builder.backend, rules, feature_set=config.feature_set,
                              reference=False)
    new = builder.open_store()
    new.append(rules_rec[-1])
    kept = 0
    recs = old.records(kind="kernel")
    bar = _progress(len(recs), "re-featuring", config.progress)
    try:
        for rec in recs:
            bar.update(1)
            spec = specs.get(rec["spec"])
            if spec is None or float(rec.get("flush_mb") or 0.0) != builder.flush_mb_of(spec):
                continue
            try:
                p = measurer.prepare(spec, rec["config"])
            except KernelMismatchError:
                continue
            new.append({**rec, "features": [round(float(f), 7) for f in p.features],
                        "regressor": p.regressor, "kernel_type": p.kernel_type})
            kept += 1
    finally:
        bar.close()
    return kept


def build_predictor(config: BuildConfig, *, refit: bool = False, **kwargs: Any) -> BuildResult:
    """Run a build (see :class:`BuildConfig`); returns the fits and the package path. With
    ``refit=True``, only fit and write from the stored measurements (:meth:`Builder.refit`)."""
    builder = Builder(config, **kwargs)
    return builder.refit() if refit else builder.run()
