"""How a scoring job runs: in this process or on Ray, in table or full mode.

:class:`TableRun` builds one latency lookup table per device (here, or one Ray task per
device) and scores chunks with vectorised lookups; :class:`FullRun` freezes, exports and
predicts every candidate (here, or in Ray actors that build the space once). Both decide from
the first unit of work whether Ray is worth starting (:data:`RAY_BREAK_EVEN_S`).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import ScoringError
from .plan import ScoringPlan
from .ray_session import (RaySession, build_device_table, build_device_table_task,
                          score_table_chunk_task, unwrap_ray_error)
from .rows import ProgressWriter, chunk_frame, full_columns, table_columns
from .spaces import SpaceSpec

__all__ = ["Run", "TableRun", "FullRun", "RunInfo", "RAY_BREAK_EVEN_S"]

_log = logging.getLogger("nnmeter_nas.parallel.api")

#: Auto mode stays in-process when the work left is estimated below this many seconds times
#: W/(W-1) for W workers: starting Ray and workers that import torch and NNI costs about this
#: much on the 2-core reference machine (``benchmarks/scoring.py`` measures it).
RAY_BREAK_EVEN_S = 20.0


@dataclass
class RunInfo:
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


class Run:
    def __init__(self, *, spec: SpaceSpec, model_space: Any, layout: Any, plan: ScoringPlan,
                 predictors: list, kernels: bool, table: Any, address: str | None,
                 num_workers: int | None, in_process: bool | None, runtime_env: dict | None,
                 bar: ProgressWriter, info: RunInfo) -> None:
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


class TableRun(Run):
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
            with RaySession(self.address, self.num_workers, self.runtime_env) as ray_session:
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
            self.bar.add(chunk_frame(self.plan, c, codes,
                                table_columns(values, full.columns, self.devices)))
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
        table = build_device_table(self.spec, self.model_space, predictor, self.plan.space)
        self.info.table_seconds[predictor.device] = round(time.perf_counter() - t0, 3)
        return table

    def _build_ray(self, session: "RaySession", missing: list) -> dict[str, Any]:
        if not missing:
            return {}
        remote = session.remote(build_device_table_task, max_retries=3)
        spec_ref = session.put(self.spec)
        refs = {remote.remote(spec_ref, p, self.plan.space): p.device for p in missing}
        out = {}
        for ref, device in refs.items():
            table, seconds, node, pid = session.get(ref)
            out[device] = table
            self.info.table_seconds[device] = round(seconds, 3)
            self.info.table_nodes[device] = node
        return out

    def _score_ray(self, session: "RaySession", full: Any, todo: list[int]) -> None:
        remote = session.remote(score_table_chunk_task, max_retries=3)
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
            self.bar.add(chunk_frame(self.plan, chunk, codes,
                                table_columns(values, full.columns, self.devices)))
            submit()


class FullRun(Run):
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
            with RaySession(self.address, self.num_workers, self.runtime_env) as session:
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
        self.bar.add(chunk_frame(self.plan, c, codes,
                            full_columns(result, self.devices, self.kernels)))
        self.info.count("local", os.getpid())

    def _score_ray(self, session: "RaySession", todo: list[int]) -> None:
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
                                       f"{unwrap_ray_error(exc)}") from exc
                _log.warning("worker lost while scoring chunk %d (%s); retrying", c, exc)
                queue.insert(0, c)
                submit()
                continue
            self.info.count(node, pid)
            self.bar.add(chunk_frame(self.plan, chunk, codes,
                                full_columns(result, self.devices, self.kernels)))
            submit()
        for actor in actors:
            session.kill(actor)
