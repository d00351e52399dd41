"""Ray plumbing of scoring: the session (join or start a cluster, shut down only what it
started), the remote tasks and the full-mode actor. Ray is imported when a session starts."""
from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import ScoringError
from .codes import LabelSpace
from .plan import ScoringPlan
from .spaces import SpaceSpec

__all__ = ["RaySession", "FullActor", "build_device_table", "build_device_table_task",
           "score_table_chunk_task", "unwrap_ray_error"]


def unwrap_ray_error(exc: BaseException) -> BaseException:
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def build_device_table(spec: SpaceSpec, model_space: Any, predictor: Any,
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


def build_device_table_task(spec: SpaceSpec, predictor: Any, label_space: LabelSpace
                             ) -> tuple[Any, float, str, int]:
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        model_space = spec.build()
    table = build_device_table(spec, model_space, predictor, label_space)
    return (table, time.perf_counter() - t0, *_node_and_pid())


def score_table_chunk_task(table: Any, plan: ScoringPlan, chunk: int,
                            codes: np.ndarray | None) -> tuple:
    if codes is None:
        codes = plan.chunk_codes(chunk)
    return (chunk, codes, table.evaluate(codes), *_node_and_pid())


class FullActor:
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


class RaySession:
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

    def __enter__(self) -> "RaySession":
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
        return self.ray.remote(num_cpus=1, max_restarts=3, max_task_retries=3)(FullActor)

    def put(self, obj: Any) -> Any:
        return self.ray.put(obj)

    def wait(self, refs: list, num_returns: int = 1) -> tuple[list, list]:
        return self.ray.wait(refs, num_returns=num_returns)

    def get(self, ref: Any) -> Any:
        from ray.exceptions import RayTaskError

        try:
            return self.ray.get(ref)
        except RayTaskError as exc:
            raise unwrap_ray_error(exc) from None

    def kill(self, actor: Any) -> None:
        try:
            self.ray.kill(actor)
        except Exception:  # already gone
            pass
