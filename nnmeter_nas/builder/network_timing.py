"""Whole-network latencies on a backend, measured so that a shared machine's drift averages out.

Used for the ground truth of calibrations (:mod:`nnmeter_nas.builder.calibrate`) and of the
accuracy benchmark. All latencies are milliseconds.
"""
from __future__ import annotations

import os
import random
import statistics
import time
from typing import Any, Callable, Sequence


def measure_interleaved(backend: Any, models: Sequence[bytes], passes: int, *, seed: int = 0,
                        visit_ms: float = 8.0, max_runs: int = 10,
                        loads: list[float] | None = None, pause_s: float = 0.0,
                        on_pass: Callable[[int], None] | None = None) -> list[list[float]]:
    """Median latency (ms) of each of ``models`` (serialized ONNX) in each of ``passes`` visits.

    All sessions are created first; then every pass visits every model once, in a fresh random
    order, and times ``k`` runs of it (``k`` so that a visit lasts about ``visit_ms``, at most
    ``max_runs``) with the backend's clock; passes are ``pause_s`` apart. The speed of a shared
    machine drifts over seconds to minutes; spreading a model's runs over many passes averages
    that drift, and all models see the same drift. ``loads`` collects the 1-minute load average
    at every pass; ``on_pass(p)`` is called after pass ``p`` (progress).
    """
    clock = time.thread_time if backend.plan.clock == "thread" else time.perf_counter
    runs = [backend.prepare(m) for m in models]
    try:
        reps = []
        for r in runs:
            for _ in range(2):
                r.run()
            c0 = clock()
            r.run()
            one = (clock() - c0) * 1e3
            reps.append(int(min(max_runs, max(1, round(visit_ms / max(one, 1e-3))))))
        out: list[list[float]] = [[] for _ in runs]
        rng = random.Random(seed)
        order = list(range(len(runs)))
        for p in range(passes):
            if p and pause_s > 0:
                time.sleep(pause_s)
            if loads is not None:
                loads.append(os.getloadavg()[0])
            rng.shuffle(order)
            for i in order:
                ts = []
                for _ in range(reps[i]):
                    c0 = clock()
                    runs[i].run()
                    ts.append((clock() - c0) * 1e3)
                out[i].append(statistics.median(ts))
            if on_pass is not None:
                on_pass(p)
        return out
    finally:
        for r in runs:
            r.close()
