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

This module holds ``score()`` and the job's identity (what a resume must match); the chunks
are planned in :mod:`~.plan`, run by :mod:`~.runners` (on Ray through :mod:`~.ray_session`),
and turned into rows, progress and stored parts by :mod:`~.rows` and :mod:`~.store`.
"""
from __future__ import annotations

import secrets
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import NnMeterNasError, ScoringError
from ..packages.devices import resolve_predictors
from .codes import LabelSpace
from .plan import FULL_CHUNK, TABLE_CHUNK, ScoringPlan
from .rows import ProgressWriter, kernels_column, label_normaliser, latency_column
from .runners import RAY_BREAK_EVEN_S, FullRun, RunInfo, TableRun
from .spaces import resolve_space
from .store import ResultStore

__all__ = ["score", "resolve_devices", "ScoringPlan", "JOB_FORMAT", "latency_column",
           "kernels_column", "RAY_BREAK_EVEN_S", "TABLE_CHUNK", "FULL_CHUNK", "ScoringError"]


JOB_FORMAT = "nnmeter-nas-scores/1"
#: Ceiling on enumerating a whole space (``n="all"``).
MAX_ENUMERATE = 1_000_000_000


# ---------------------------------------------------------------------------- devices
#: how ``score`` reads ``devices`` (:func:`nnmeter_nas.packages.devices.resolve_predictors`)
resolve_devices = resolve_predictors


# ---------------------------------------------------------------------------- main entry
def score(space: Any, samples: Sequence[Mapping[str, Any]] | None = None, *,
          n: int | str | None = None, devices: Any = "all", mode: str = "table",
          address: str | None = None, num_workers: int | None = None, seed: int | None = None,
          out: str | Path | None = None, input_shape: Sequence[int] | None = None,
          kernels: bool = False, table: Any = None, chunk_size: int | None = None,
          in_process: bool | None = None, overwrite: bool = False, progress: bool = True,
          runtime_env: dict | None = None, flush_seconds: float = 5.0,
          on_progress: Callable[[int, int], Any] | None = None) -> Any:
    """Score candidates of ``space`` on ``devices``: predicted latency (ms), FLOPs and params.

    Parameters
    ----------
    space : str or nni.nas.nn.pytorch.ModelSpace
        ``"spos"``, ``"spos-small"``, ``"nb201"`` (full mode only: its ``freeze`` lays networks
        out anew, so it cannot be tabulated), ``"toy"``, a space added with
        :func:`~nnmeter_nas.search_spaces.registry.register_space`, ``"MODULE:CLASS"`` or an NNI
        model space.
    samples : list of dict, default=None
        The candidates as NNI samples; or give ``n``.
    n : int or "all", default=None
        Number of uniformly random candidates (drawn with ``seed``), or ``"all"`` for every
        candidate of a small space.
    devices : "all", str, list or LatencyPredictor, default="all"
        ``"all"`` (installed and built-in predictors), names, package paths or predictors.
    mode : {"table", "full"}, default="table"
        ``"table"``: one lookup table per device (built first), then a sum per candidate.
        ``"full"``: each candidate frozen and predicted kernel by kernel (exact, much slower;
        see ``benchmarks/results/scoring.txt``).
    address : str, default=None
        An existing Ray cluster (``"auto"``, ``"ray://host:10001"``). By default a local Ray
        with ``num_workers`` CPUs is started when the job is big enough, and small jobs run in
        this process (``in_process`` forces either).
    num_workers : int, default=None
        CPUs of the local Ray (None: all cores).
    seed : int, default=None
        Random stream of ``n`` random candidates; None draws one (and a rerun with the same
        ``out`` reuses the stored one).
    out : str or path, default=None
        ``*.parquet`` or ``*.csv`` written incrementally; a rerun with the same arguments
        resumes where the previous run stopped.
    input_shape : tuple of int, default=None
        NCHW input shape, batch included (defaults to the space's).
    kernels : bool, default=False
        ``full`` mode: add a ``<device>_kernels`` column of JSON ``[[kernel, type, ms, status],
        ...]``.
    table : LatencyTable, str or path, default=None
        A :class:`~nnmeter_nas.nni.table.LatencyTable` (or its JSON path, see ``nnmeter-nas
        lut``) to use instead of building tables for the devices it holds.
    chunk_size : int, default=None
        Candidates per unit of work (and per resume step); None takes the mode's default.
    in_process : bool, default=None
        True: never start Ray; False: always use Ray; None: decide by the work's size.
    overwrite : bool, default=False
        Start over instead of resuming ``out``.
    progress : bool, default=True
        Show a progress bar.
    runtime_env : dict, default=None
        Ray ``runtime_env`` for the workers.
    flush_seconds : float, default=5.0
        Write finished rows to ``out`` at most this often (seconds).
    on_progress : callable, default=None
        ``(done, total) -> None``, called as candidates finish.

    Returns
    -------
    pandas.DataFrame
        One row per candidate, sorted by ``index``: ``index``, one categorical column per
        label, ``flops`` (2 x conv/linear multiply-accumulates), ``params``, and
        ``<device>_ms`` per device. ``df.attrs["nnmeter_nas"]`` describes the run (backend,
        nodes, seed).

    Examples
    --------
    >>> from nnmeter_nas.parallel import score
    >>> df = score("toy", n=5, seed=0, devices=["cortexA76cpu_tflite21"], in_process=True,
    ...            progress=False)
    >>> list(df.columns)
    ['index', 'op1', 'op2', 'depth', 'head', 'flops', 'params', 'cortexA76cpu_tflite21_ms']
    >>> len(df), bool((df["cortexA76cpu_tflite21_ms"] > 0).all())
    (5, True)
    """
    if mode not in ("table", "full"):
        raise NnMeterNasError(f"mode must be 'table' or 'full', not {mode!r}")
    if (samples is None) == (n is None):
        raise NnMeterNasError("pass either samples=[...] or n=<number of random candidates> "
                              "(or n='all')")
    if isinstance(samples, (int, str)):
        raise NnMeterNasError(f"score({space!r}, {samples!r}): the second argument is a list of "
                              f"samples; for random candidates pass n={samples!r}")
    if isinstance(samples, Mapping):
        raise NnMeterNasError("samples is one sample (a dict); pass a list of samples")
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
    normalise = label_normaliser(label_space)

    state, stored = store.open()
    try:
        if state == "done":
            df = store.read_finished(normalise)
            df.attrs["nnmeter_nas"] = {"backend": "resumed (already complete)", "seed": job["seed"]}
            return df
        todo = [c for c in range(plan.n_chunks) if c not in stored]
        done_rows = sum(plan.bounds(c)[1] - plan.bounds(c)[0] for c in stored)
        bar = ProgressWriter(store, total, done_rows, desc=f"score {mode} x{len(dev_names)} devices",
                        enabled=progress, on_progress=on_progress, flush_seconds=flush_seconds)
        info = RunInfo()
        try:
            runner = TableRun if mode == "table" else FullRun
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
