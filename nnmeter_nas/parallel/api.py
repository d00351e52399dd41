"""``score()``: latency (ms) on many devices, FLOPs and parameters of many candidates of a space.

Two modes:

- ``table``: each device's latency lookup table is built once (one Ray task per device), then
  candidates are scored in chunks with vectorised lookups (:class:`~.lookup.CodeTable`);
- ``full``: each candidate is frozen, exported and predicted kernel by kernel in Ray actors that
  build the space and load the predictors once.

Every chunk of candidates is a pure function of ``(seed, chunk)`` (or of the given samples), so
the result does not depend on where or in which order chunks run: it is identical to scoring
serially in one process. Results are written incrementally to ``out`` and a rerun resumes
(:mod:`~.store`).
"""
from __future__ import annotations

import logging
import os
import secrets
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import NnMeterNasError, ScoringError
from ..packages.devices import resolve_predictors
from .codes import LabelSpace
from .spaces import SpaceSpec, resolve_space
from .store import ResultStore

__all__ = ["score", "resolve_devices", "ScoringPlan", "JOB_FORMAT", "latency_column",
           "RAY_BREAK_EVEN_S", "TABLE_CHUNK", "FULL_CHUNK"]

_log = logging.getLogger(__name__)

JOB_FORMAT = "nnmeter-nas-scores/1"
#: Candidates per chunk (unit of work, of resume and of the random stream).
TABLE_CHUNK = 65536
FULL_CHUNK = 8
#: Auto mode stays in-process when the work left is estimated below this many seconds times
#: W/(W-1) for W workers: starting Ray and workers that import torch and NNI costs about this
#: much on the 2-core reference machine (``benchmarks/scoring.py`` measures it).
RAY_BREAK_EVEN_S = 20.0
#: Ceiling on enumerating a whole space (``n="all"``).
MAX_ENUMERATE = 1_000_000_000


def latency_column(device: str) -> str:
    """Name of the latency column (ms) of ``device`` in score tables."""
    return f"{device}_ms"


def kernels_column(device: str) -> str:
    return f"{device}_kernels"


# ---------------------------------------------------------------------------- devices
#: how ``score`` reads ``devices`` (:func:`nnmeter_nas.packages.devices.resolve_predictors`)
resolve_devices = resolve_predictors


# ---------------------------------------------------------------------------- plan
@dataclass
class ScoringPlan:
    """Which candidates make up the job and how they are cut into chunks.

    ``source`` is ``"random"`` (``total`` uniform draws from ``(seed, chunk)`` streams),
    ``"all"`` (the whole space in mixed-radix order) or ``"samples"`` (given ``codes``).
    """

    space: LabelSpace
    source: str
    total: int
    chunk_size: int
    seed: int | None = None
    codes: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_chunks(self) -> int:
        return -(-self.total // self.chunk_size)

    def bounds(self, chunk: int) -> tuple[int, int]:
        start = chunk * self.chunk_size
        return start, min(start + self.chunk_size, self.total)

    def chunk_codes(self, chunk: int) -> np.ndarray:
        start, stop = self.bounds(chunk)
        if self.source == "random":
            return self.space.random_codes(stop - start, self.seed or 0, chunk)
        if self.source == "all":
            return self.space.enumerate_codes(start, stop)
        assert self.codes is not None
        return self.codes[start:stop]

    def for_worker(self) -> "ScoringPlan":
        """A copy without the explicit codes (workers get their chunk's codes as arguments)."""
        return ScoringPlan(self.space, self.source, self.total, self.chunk_size, self.seed, None)


# ---------------------------------------------------------------------------- results
def _frame(plan: ScoringPlan, chunk: int, codes: np.ndarray, columns: Mapping[str, Any]) -> Any:
    """One chunk as a DataFrame: index, one categorical column per label, then ``columns``."""
    import pandas as pd

    start, stop = plan.bounds(chunk)
    data: dict[str, Any] = {"index": np.arange(start, stop, dtype=np.int64)}
    for j, label in enumerate(plan.space.labels):
        data[label] = pd.Categorical.from_codes(codes[:, j].astype(np.int32),
                                                categories=plan.space.value_categories(j))
    data.update(columns)
    return pd.DataFrame(data)


def _normaliser(space: LabelSpace) -> Callable[[Any], Any]:
    """Restore label columns as categoricals of the label's values (CSV parts read back as
    plain strings or numbers)."""
    import pandas as pd

    def normalise(df: Any) -> Any:
        for j, label in enumerate(space.labels):
            if label not in df.columns:
                continue
            cats = space.value_categories(j)
            col = df[label]
            if isinstance(col.dtype, pd.CategoricalDtype) and list(col.cat.categories) == cats:
                continue
            by_text = {str(c): c for c in cats}
            df[label] = pd.Categorical(col.astype(str).map(by_text), categories=cats)
        df["index"] = df["index"].astype(np.int64)
        return df

    return normalise


def _table_columns(values: np.ndarray, columns: Sequence[str], devices: Sequence[str]
                   ) -> dict[str, np.ndarray]:
    pos = {c: k for k, c in enumerate(columns)}
    out = {"flops": values[:, pos["flops"]], "params": values[:, pos["params"]]}
    for d in devices:
        out[latency_column(d)] = values[:, pos[d]]
    return out


def _full_columns(result: Mapping[str, Any], devices: Sequence[str], kernels: bool
                  ) -> dict[str, Any]:
    out = {"flops": result["flops"], "params": result["params"]}
    for d in devices:
        out[latency_column(d)] = result[d]
    if kernels:
        for d in devices:
            out[kernels_column(d)] = result["kernels:" + d]
    return out


# ---------------------------------------------------------------------------- progress
class _Progress:
    """tqdm bar (rate and ETA) plus an optional callback; writes buffered chunks to the store."""

    def __init__(self, store: ResultStore, total: int, done: int, *, desc: str,
                 enabled: bool, on_progress: Callable[[int, int], Any] | None,
                 flush_seconds: float) -> None:
        self.store = store
        self.total = total
        self.done = done
        self.on_progress = on_progress
        self.flush_seconds = flush_seconds
        self._buffer: list[Any] = []
        self._last_flush = time.monotonic()
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, desc=desc, unit="cand",
                            unit_scale=True, dynamic_ncols=True, smoothing=0.1)

    def add(self, frame: Any) -> None:
        self._buffer.append(frame)
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()
        n = len(frame)
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        if self.on_progress is not None:
            self.on_progress(self.done, self.total)

    def flush(self) -> None:
        if self._buffer:
            self.store.write(self._buffer)
            self._buffer = []
        self._last_flush = time.monotonic()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------- ray plumbing
@dataclass
class _RunInfo:
    backend: str = "in-process"
    workers: int = 1
    nodes: dict[str, int] = field(default_factory=dict)      # node id -> chunks scored there
    pids: dict[int, int] = field(default_factory=dict)       # worker pid -> chunks
    retries: int = 0
    table_seconds: dict[str, float] = field(default_factory=dict)
    table_nodes: dict[str, str] = field(default_factory=dict)  # device -> node that built it

    def count(self, node: str, pid: int) -> None:
        self.nodes[node] = self.nodes.get(node, 0) + 1
        self.pids[pid] = self.pids.get(pid, 0) + 1


def _unwrap_ray_error(exc: BaseException) -> BaseException:
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


# ---------------------------------------------------------------------------- main entry
def score(space: Any, samples: Sequence[Mapping[str, Any]] | None = None, *,
          n: int | str | None = None, devices: Any = "all", mode: str = "table",
          address: str | None = None, num_workers: int | None = None, seed: int | None = None,
          out: str | Path | None = None, input_shape: Sequence[int] | None = None,
          kernels: bool = False, table: Any = None, chunk_size: int | None = None,
          in_process: bool | None = None, overwrite: bool = False, progress: bool = True,
          runtime_env: dict | None = None, flush_seconds: float = 5.0,
          on_progress: Callable[[int, int], Any] | None = None) -> Any:
    """Score candidates of ``space`` on ``devices``; returns a pandas DataFrame.

    Parameters
    ----------
    space:
        ``"spos"``, ``"spos-small"``, ``"nb201"``, ``"MODULE:CLASS"`` or an NNI model space.
    samples, n:
        The candidates: a list of NNI samples, or ``n`` uniformly random ones (``seed``), or
        ``n="all"`` for every candidate of a small space.
    devices:
        ``"all"`` (installed and built-in predictors), names, package paths or predictors.
    mode:
        ``"table"`` (lookup tables, millions of candidates per second) or ``"full"`` (each
        candidate exported and predicted kernel by kernel; exact, about 0.1-1 s per candidate).
    address:
        An existing Ray cluster (``"auto"``, ``"ray://host:10001"``); by default a local Ray
        with ``num_workers`` CPUs (all cores) is started when the job is big enough, and small
        jobs run in this process (``in_process`` forces either).
    seed:
        Random stream of ``n`` random candidates; None draws one (and a rerun with the same
        ``out`` reuses the stored one).
    out:
        ``*.parquet`` or ``*.csv`` written incrementally; a rerun with the same arguments
        resumes where the previous run stopped (``overwrite=True`` starts over).
    input_shape:
        NCHW input shape (defaults to the space's).
    kernels:
        ``full`` mode: add a ``<device>_kernels`` column of JSON ``[[kernel, type, ms, status],
        ...]``.
    table:
        A :class:`~nnmeter_nas.nni.table.LatencyTable` (or its JSON path, see ``nnmeter-nas
        lut``) to use instead of building tables for the devices it holds.

    Returns
    -------
    DataFrame with one row per candidate, sorted by ``index``: ``index``, one categorical
    column per label, ``flops`` (2 x conv/linear multiply-accumulates), ``params``, and
    ``<device>_ms`` per device. ``df.attrs["nnmeter_nas"]`` describes the run (backend, nodes).
    """
    if mode not in ("table", "full"):
        raise NnMeterNasError(f"mode must be 'table' or 'full', not {mode!r}")
    if (samples is None) == (n is None):
        raise NnMeterNasError("pass either samples=[...] or n=<number of random candidates> "
                              "(or n='all')")
    if kernels and mode != "full":
        raise NnMeterNasError("kernels=True needs mode='full' (a lookup table has no kernels)")
    t_start = time.perf_counter()
    spec = resolve_space(space, input_shape)
    predictors = resolve_devices(devices)
    dev_names = [p.device for p in predictors]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NNI's torch-version notice
        model_space = spec.build()
    from ..nni.choice_points import find_choice_points

    layout = find_choice_points(model_space)
    label_space = LabelSpace.from_label_values(layout.label_values)

    # ---- the candidates
    chunk_size = int(chunk_size or (TABLE_CHUNK if mode == "table" else FULL_CHUNK))
    if chunk_size < 1:
        raise NnMeterNasError("chunk_size must be positive")
    codes = None
    if samples is not None:
        codes = label_space.encode(list(samples))
        source, total = "samples", len(codes)
    elif isinstance(n, str):
        if n != "all":
            raise NnMeterNasError(f"n must be a number of candidates or 'all', not {n!r}")
        total = label_space.size
        if total > MAX_ENUMERATE:
            raise NnMeterNasError(f"the space has {total:.3g} candidates, too many to enumerate; "
                                  "pass a number of random candidates instead")
        source = "all"
    else:
        total = int(n)
        if total < 1:
            raise NnMeterNasError(f"n must be at least 1, got {n}")
        source = "random"

    job = {
        "format": JOB_FORMAT,
        "space": spec.key,
        "input_shape": list(spec.input_shape),
        "labels": label_space.to_dict(),
        "devices": [[p.device, getattr(p, "name", ""), getattr(p, "version", ""),
                     getattr(p, "calibration", None), _package_fingerprint(p)]
                    for p in predictors],
        "mode": mode,
        "source": source,
        "n": total,
        "seed": None,
        "chunk_size": chunk_size,
        "kernels": bool(kernels),
    }
    if source == "samples":
        import hashlib

        job["samples_sha256"] = hashlib.sha256(np.ascontiguousarray(codes).tobytes()).hexdigest()
    store = ResultStore(out, job, chunk_size=chunk_size, n_total=total, overwrite=overwrite)
    if source == "random":
        if seed is None:
            seed = _stored_seed(store, job)
        job["seed"] = int(seed if seed is not None else secrets.randbits(62))
    plan = ScoringPlan(label_space, source, total, chunk_size, job["seed"], codes)
    normalise = _normaliser(label_space)

    state, stored = store.open()
    try:
        if state == "done":
            df = store.read_finished(normalise)
            df.attrs["nnmeter_nas"] = {"backend": "resumed (already complete)", "seed": job["seed"]}
            return df
        todo = [c for c in range(plan.n_chunks) if c not in stored]
        done_rows = sum(plan.bounds(c)[1] - plan.bounds(c)[0] for c in stored)
        bar = _Progress(store, total, done_rows, desc=f"score {mode} x{len(dev_names)} devices",
                        enabled=progress, on_progress=on_progress, flush_seconds=flush_seconds)
        info = _RunInfo()
        try:
            runner = _TableRun if mode == "table" else _FullRun
            runner(spec=spec, model_space=model_space, layout=layout, plan=plan,
                   predictors=predictors, kernels=kernels, table=table, address=address,
                   num_workers=num_workers, in_process=in_process, runtime_env=runtime_env,
                   bar=bar, info=info).run(todo)
        finally:
            bar.flush()  # keep every finished chunk, also when interrupted
            bar.close()
        df = store.finish(normalise)
    finally:
        store.close()
    df.attrs["nnmeter_nas"] = {
        "backend": info.backend, "workers": info.workers, "nodes": dict(info.nodes),
        "pids": dict(info.pids), "retries": info.retries, "seed": job["seed"],
        "resumed_chunks": len(stored), "seconds": round(time.perf_counter() - t_start, 3),
        "table_seconds": info.table_seconds, "table_nodes": info.table_nodes,
    }
    return df


def _package_fingerprint(predictor: Any) -> str:
    """Short hash of a predictor package's file checksums and of the calibration it applies
    (changes when the package is rebuilt or the calibration refitted)."""
    import hashlib
    import json

    manifest = getattr(getattr(predictor, "package", None), "manifest", {})
    cal = getattr(predictor, "calibration", None)
    what = {"files": manifest.get("files", {}),
            "calibration": (manifest.get("calibrations") or {}).get(cal) if cal else None}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def _stored_seed(store: ResultStore, job: dict) -> int | None:
    """The seed of an unfinished or finished run of the same job at ``out`` (None if none)."""
    for other in (store.stored_job(), store.finished_job()):
        if other and {k: v for k, v in other.items() if k != "seed"} == \
                {k: v for k, v in job.items() if k != "seed"}:
            return other.get("seed")
    return None


# ---------------------------------------------------------------------------- runners
class _Run:
    def __init__(self, *, spec: SpaceSpec, model_space: Any, layout: Any, plan: ScoringPlan,
                 predictors: list, kernels: bool, table: Any, address: str | None,
                 num_workers: int | None, in_process: bool | None, runtime_env: dict | None,
                 bar: _Progress, info: _RunInfo) -> None:
        self.spec, self.model_space, self.layout, self.plan = spec, model_space, layout, plan
        self.predictors, self.kernels, self.table = predictors, kernels, table
        self.address, self.num_workers, self.in_process = address, num_workers, in_process
        self.runtime_env, self.bar, self.info = runtime_env, bar, info
        self.devices = [p.device for p in predictors]

    # Ray is used when asked for (address, a running session, in_process=False), never when
    # in_process=True, and otherwise when the work left is worth starting it.
    def _ray_forced(self) -> bool | None:
        if self.in_process is True:
            return False
        if self.in_process is False or self.address is not None:
            return True
        import sys

        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            return True
        return None

    def _worth_ray(self, seconds_left: float) -> bool:
        workers = self.num_workers or os.cpu_count() or 1
        if workers < 2 or seconds_left <= RAY_BREAK_EVEN_S * workers / (workers - 1):
            return False
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            _log.warning("Ray is not installed: scoring in this process (about %.0f s of work "
                         "left); pip install 'nnmeter-nas[ray]' to use all cores", seconds_left)
            return False
        return True


class _TableRun(_Run):
    def run(self, todo: list[int]) -> None:
        from .costs import build_cost_table
        from .lookup import CodeTable

        if not todo:
            return
        t0 = time.perf_counter()
        cost = build_cost_table(self.model_space, self.spec.input_shape, layout=self.layout)
        self.info.table_seconds["flops/params"] = round(time.perf_counter() - t0, 3)
        given = self._given_tables()
        missing = [p for p in self.predictors if p.device not in given]
        forced = self._ray_forced()
        tables = dict(given)
        if missing and forced is None:
            # Build the first table here and time it: it decides whether Ray is worth starting.
            t0 = time.perf_counter()
            tables[missing[0].device] = self._build_here(missing[0])
            spent = time.perf_counter() - t0
            missing = missing[1:]
            probe = CodeTable.concat([cost] + [tables[d] for d in tables])
            t0 = time.perf_counter()
            probe.evaluate(self.plan.chunk_codes(todo[0])[:4096])
            rate = 4096 * len(probe.columns) / max(time.perf_counter() - t0, 1e-9)
            left = len(missing) * spent + sum(
                self.plan.bounds(c)[1] - self.plan.bounds(c)[0] for c in todo) * \
                len(self.devices) / rate
            forced = self._worth_ray(left)
        if forced:
            with _RaySession(self.address, self.num_workers, self.runtime_env) as ray_session:
                self.info.backend = "ray"
                self.info.workers = ray_session.cpus
                tables.update(self._build_ray(ray_session, missing))
                full = CodeTable.concat([cost] + [tables[d] for d in self.devices])
                self._score_ray(ray_session, full, todo)
            return
        for p in missing:
            tables[p.device] = self._build_here(p)
        full = CodeTable.concat([cost] + [tables[d] for d in self.devices])
        for c in todo:
            codes = self.plan.chunk_codes(c)
            values = full.evaluate(codes)
            self.bar.add(_frame(self.plan, c, codes,
                                _table_columns(values, full.columns, self.devices)))
            self.info.count("local", os.getpid())

    def _given_tables(self) -> dict[str, Any]:
        from .lookup import CodeTable

        if self.table is None:
            return {}
        from ..nni.table import LatencyTable

        tables = self.table if isinstance(self.table, (list, tuple)) else [self.table]
        out = {}
        for t in tables:
            if not isinstance(t, LatencyTable):
                t = LatencyTable.load(t)
            t.check_space(self.layout.signature(), self.spec.input_shape)
            code = CodeTable.from_latency_table(t, self.plan.space)
            built_with = t.meta.get("predictors", {})
            for p in self.predictors:
                if p.device not in t.devices:
                    continue
                want = {"name": getattr(p, "name", ""), "version": getattr(p, "version", "")}
                have = built_with.get(p.device)
                if have is not None and {k: have.get(k) for k in want} != want:
                    from ..nni.errors import TableMismatchError

                    raise TableMismatchError(
                        f"the latency table for device {p.device!r} was built with predictor "
                        f"{have.get('name')} {have.get('version')}, not {want['name']} "
                        f"{want['version']}; rebuild it (nnmeter-nas lut) or drop table=")
                out[p.device] = code.select([p.device])
        return out

    def _build_here(self, predictor: Any) -> Any:
        t0 = time.perf_counter()
        table = _build_device_table(self.spec, self.model_space, predictor, self.plan.space)
        self.info.table_seconds[predictor.device] = round(time.perf_counter() - t0, 3)
        return table

    def _build_ray(self, session: "_RaySession", missing: list) -> dict[str, Any]:
        if not missing:
            return {}
        remote = session.remote(_build_device_table_task, max_retries=3)
        spec_ref = session.put(self.spec)
        refs = {remote.remote(spec_ref, p, self.plan.space): p.device for p in missing}
        out = {}
        for ref, device in refs.items():
            table, seconds, node, pid = session.get(ref)
            out[device] = table
            self.info.table_seconds[device] = round(seconds, 3)
            self.info.table_nodes[device] = node
        return out

    def _score_ray(self, session: "_RaySession", full: Any, todo: list[int]) -> None:
        remote = session.remote(_score_table_chunk_task, max_retries=3)
        table_ref = session.put(full)
        plan_ref = session.put(self.plan.for_worker())
        window = 2 * session.cpus + 2
        queue = list(todo)
        pending: dict[Any, int] = {}

        def submit() -> None:
            while queue and len(pending) < window:
                c = queue.pop(0)
                codes = self.plan.chunk_codes(c) if self.plan.source == "samples" else None
                pending[remote.remote(table_ref, plan_ref, c, codes)] = c

        submit()
        while pending:
            ready, _ = session.wait(list(pending), num_returns=1)
            pending.pop(ready[0])
            chunk, codes, values, node, pid = session.get(ready[0])
            self.info.count(node, pid)
            self.bar.add(_frame(self.plan, chunk, codes,
                                _table_columns(values, full.columns, self.devices)))
            submit()


class _FullRun(_Run):
    def run(self, todo: list[int]) -> None:
        from .full import FullScorer

        if not todo:
            return
        forced = self._ray_forced()
        scorer = None
        if forced is None:
            # Score the first chunk here and time it to decide whether Ray is worth starting.
            scorer = FullScorer(self.spec, self.predictors, label_space=self.plan.space,
                                kernels=self.kernels)
            t0 = time.perf_counter()
            self._score_here(scorer, todo[0])
            per_candidate = (time.perf_counter() - t0) / max(1, self._size(todo[0]))
            todo = todo[1:]
            left = sum(self._size(c) for c in todo) * per_candidate
            forced = self._worth_ray(left)
        if forced and todo:
            with _RaySession(self.address, self.num_workers, self.runtime_env) as session:
                self.info.backend = "ray"
                self._score_ray(session, todo)
            return
        if scorer is None:
            scorer = FullScorer(self.spec, self.predictors, label_space=self.plan.space,
                                kernels=self.kernels)
        for c in todo:
            self._score_here(scorer, c)

    def _size(self, c: int) -> int:
        start, stop = self.plan.bounds(c)
        return stop - start

    def _score_here(self, scorer: Any, c: int) -> None:
        codes = self.plan.chunk_codes(c)
        result = scorer.score_codes(codes)
        self.bar.add(_frame(self.plan, c, codes,
                            _full_columns(result, self.devices, self.kernels)))
        self.info.count("local", os.getpid())

    def _score_ray(self, session: "_RaySession", todo: list[int]) -> None:
        actor_cls = session.actor_class()
        n_actors = max(1, min(self.num_workers or session.cpus, len(todo)))
        self.info.workers = n_actors
        setup = [session.put((self.spec, self.predictors, self.plan.space, self.kernels))]
        actors = [actor_cls.options(scheduling_strategy="SPREAD").remote()
                  for _ in range(n_actors)]
        queue = list(todo)
        attempts: dict[int, int] = {}
        pending: dict[Any, tuple[int, int]] = {}
        alive = set(range(n_actors))
        per_actor = 2  # one running, one queued: no idle gap between chunks

        def load(a: int) -> int:
            return sum(1 for _, (_, b) in pending.items() if b == a)

        def submit() -> None:
            for a in sorted(alive):
                while queue and load(a) < per_actor:
                    c = queue.pop(0)
                    pending[actors[a].score.remote(c, self.plan.chunk_codes(c), setup)] = (c, a)

        submit()
        while pending:
            ready, _ = session.wait(list(pending), num_returns=1)
            c, a = pending.pop(ready[0])
            try:
                chunk, codes, result, node, pid = session.get(ready[0])
            except session.actor_errors as exc:
                # Ray already restarted the actor and retried the task (max_restarts,
                # max_task_retries) and gave up: retire the actor, give the chunk to another.
                attempts[c] = attempts.get(c, 0) + 1
                self.info.retries += 1
                if isinstance(exc, session.actor_died):
                    alive.discard(a)
                if attempts[c] > 3 or not alive:
                    raise ScoringError(f"chunk {c} failed {attempts[c]} times, "
                                       f"{len(alive)} workers left: "
                                       f"{_unwrap_ray_error(exc)}") from exc
                _log.warning("worker lost while scoring chunk %d (%s); retrying", c, exc)
                queue.insert(0, c)
                submit()
                continue
            self.info.count(node, pid)
            self.bar.add(_frame(self.plan, chunk, codes,
                                _full_columns(result, self.devices, self.kernels)))
            submit()
        for actor in actors:
            session.kill(actor)


# ---------------------------------------------------------------------------- worker code
def _build_device_table(spec: SpaceSpec, model_space: Any, predictor: Any,
                        label_space: LabelSpace) -> Any:
    """One device's latency lookup table as a :class:`~.lookup.CodeTable` (column = device)."""
    from ..nni.profiler import LatencyProfiler
    from ..nni.torch_threads import torch_threads
    from .lookup import CodeTable

    with warnings.catch_warnings(), torch_threads(1):
        warnings.simplefilter("ignore", RuntimeWarning)  # fixed-part spread notices
        prof = LatencyProfiler(model_space, predictor, spec.input_shape)
    return CodeTable.from_latency_table(prof.table, label_space)


def _node_and_pid() -> tuple[str, int]:
    import ray

    return ray.get_runtime_context().get_node_id(), os.getpid()


def _build_device_table_task(spec: SpaceSpec, predictor: Any, label_space: LabelSpace
                             ) -> tuple[Any, float, str, int]:
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        model_space = spec.build()
    table = _build_device_table(spec, model_space, predictor, label_space)
    return (table, time.perf_counter() - t0, *_node_and_pid())


def _score_table_chunk_task(table: Any, plan: ScoringPlan, chunk: int,
                            codes: np.ndarray | None) -> tuple:
    if codes is None:
        codes = plan.chunk_codes(chunk)
    return (chunk, codes, table.evaluate(codes), *_node_and_pid())


class _FullActor:
    """Ray actor body: builds the space and loads the predictors on its first chunk (again
    after a restart), then scores chunk after chunk.

    The setup arrives as object refs inside a list with every call rather than as
    constructor arguments, so a restarted actor can always rebuild itself.
    """

    def __init__(self) -> None:
        self.scorer: Any = None

    def score(self, chunk: int, codes: np.ndarray, setup: list) -> tuple:
        if self.scorer is None:
            import ray

            from .full import FullScorer

            spec, predictors, label_space, kernels = ray.get(setup[0])
            self.scorer = FullScorer(spec, predictors, label_space=label_space, kernels=kernels)
        return (chunk, codes, self.scorer.score_codes(codes), *_node_and_pid())


class _RaySession:
    """Joins the running Ray session, the cluster at ``address``, or starts a local one (and
    shuts down only what it started)."""

    def __init__(self, address: str | None, num_workers: int | None,
                 runtime_env: dict | None) -> None:
        try:
            import ray
        except ImportError:
            raise ScoringError("parallel scoring needs Ray: pip install 'nnmeter-nas[ray]' "
                               "(or pass in_process=True)") from None
        self.ray = ray
        self.address = address
        self.num_workers = num_workers
        self.runtime_env = runtime_env
        self.started = False
        from ray.exceptions import ActorDiedError, RayActorError

        self.actor_errors = (RayActorError,)
        self.actor_died = ActorDiedError

    def __enter__(self) -> "_RaySession":
        ray = self.ray
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                                      "log_to_driver": False}
            env = dict(self.runtime_env or {})
            if self.address is None:
                kwargs["num_cpus"] = self.num_workers or os.cpu_count()
                # Local workers must import this package even when it is not installed.
                root = str(Path(__file__).resolve().parents[2])
                env_vars = dict(env.get("env_vars", {}))
                env_vars.setdefault("PYTHONPATH", os.pathsep.join(
                    [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
                env["env_vars"] = env_vars
            else:
                kwargs["address"] = self.address
            if env:
                kwargs["runtime_env"] = env
            ray.init(**kwargs)
            self.started = True
        self.cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        if self.num_workers:
            self.cpus = min(self.cpus, int(self.num_workers))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.started:
            self.ray.shutdown()

    def remote(self, fn: Callable, **options: Any) -> Any:
        return self.ray.remote(num_cpus=1, scheduling_strategy="SPREAD", **options)(fn)

    def actor_class(self) -> Any:
        return self.ray.remote(num_cpus=1, max_restarts=3, max_task_retries=3)(_FullActor)

    def put(self, obj: Any) -> Any:
        return self.ray.put(obj)

    def wait(self, refs: list, num_returns: int = 1) -> tuple[list, list]:
        return self.ray.wait(refs, num_returns=num_returns)

    def get(self, ref: Any) -> Any:
        from ray.exceptions import RayTaskError

        try:
            return self.ray.get(ref)
        except RayTaskError as exc:
            raise _unwrap_ray_error(exc) from None

    def kill(self, actor: Any) -> None:
        try:
            self.ray.kill(actor)
        except Exception:  # already gone
            pass
