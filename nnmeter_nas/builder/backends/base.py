"""The backend interface: run an ONNX model on a device and time it.

A backend turns an ONNX model into a :class:`Runnable` (``prepare``); the timing protocol
(warm-up, interleaved repeats, median and spread) lives here, once, so that a new backend
(torch CPU, CUDA, a phone over adb) only has to say how to load a model and run it once.

All times are milliseconds per inference (batch as given by the model), timed with the clock
the :class:`TimingPlan` names.
"""
from __future__ import annotations

import random
import statistics
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ...errors import BuildConfigError


@dataclass
class Measurement:
    """Latency of one model on one backend.

    ``latency_ms`` is the median of ``n`` timed runs; ``iqr_ms`` their inter-quartile range,
    ``mad_ms`` the median absolute deviation from the median, and ``rounds_spread_ms`` the
    range (max - min) of the per-round medians (the slow drift of a shared machine).
    ``overhead_ms`` is the fixed per-call cost of the backend that was subtracted from
    ``latency_ms`` (0 when nothing was subtracted); ``raw_ms`` is the median before that.
    ``clock`` names the clock the runs were timed with (``"wall"`` or ``"thread"``: CPU time
    of the calling thread, see :class:`TimingPlan`); ``wall_ms`` is the wall-clock median
    of the same runs.
    """

    latency_ms: float
    iqr_ms: float
    mad_ms: float
    n: int
    rounds_spread_ms: float = 0.0
    overhead_ms: float = 0.0
    raw_ms: float = 0.0
    wall_ms: float = 0.0
    clock: str = "wall"

    def to_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    @property
    def relative_iqr(self) -> float:
        return self.iqr_ms / self.raw_ms if self.raw_ms > 0 else float("nan")


@dataclass
class NodeTime:
    """One operator as a backend ran it: typical time (ms) over profiled runs, its type, the
    tensors it reads and writes, whether it reads a model input / writes a model output, and
    its attributes (ints and int lists only)."""

    name: str
    op_type: str
    ms: float
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    reads_model_input: bool = False
    writes_model_output: bool = False
    attrs: dict[str, Any] = field(default_factory=dict)


class Runnable(ABC):
    """A model loaded on a backend, with its inputs bound, ready to run."""

    @abstractmethod
    def run(self) -> None:
        """Run one inference and return once its outputs are ready (synchronise devices)."""

    def close(self) -> None:
        """Release the model (sessions, device memory)."""


@dataclass
class TimingPlan:
    """How many times to run each model.

    Each model gets ``warmup`` untimed runs, then ``rounds`` rounds; in every round each model
    is timed ``runs_per_round`` times in a row, and models are visited in a fresh random order
    per round so that a burst of load from other processes spreads over all models instead of
    biasing one. ``runs_per_round`` is raised for fast models so that a round of one model
    takes about ``round_target_ms`` (bounded by ``max_runs_per_round``).

    ``clock="thread"`` times each run with the CPU time of the calling thread
    (``time.thread_time``). When the backend computes on the calling thread only (onnxruntime
    with one intra-op thread) this equals wall-clock time on an idle machine, and leaves out
    the time the OS hands to other processes on a shared one. ``"wall"`` is
    ``time.perf_counter``; use it for multi-threaded or asynchronous (GPU) backends.
    """

    warmup: int = 3
    rounds: int = 5
    runs_per_round: int = 3
    round_target_ms: float = 20.0
    max_runs_per_round: int = 50
    seed: int = 0
    clock: str = "wall"
    flush_mb: float = 0.0

    def __post_init__(self) -> None:
        if self.clock not in ("wall", "thread"):
            raise ValueError(f"TimingPlan.clock must be 'wall' or 'thread', got {self.clock!r}")
        for name, least in (("warmup", 0), ("rounds", 1), ("runs_per_round", 1),
                            ("max_runs_per_round", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise BuildConfigError(
                    f"TimingPlan.{name} is {value!r}; it must be an int of at least {least} "
                    "(rounds: the timing repeats of every model, --repeats on the command "
                    "line)")
        if not self.flush_mb >= 0 or not self.round_target_ms >= 0:
            raise BuildConfigError(f"TimingPlan.flush_mb ({self.flush_mb!r}) and "
                                   f"round_target_ms ({self.round_target_ms!r}) must be >= 0")

    @classmethod
    def quick(cls, clock: str = "wall") -> "TimingPlan":
        """Few repeats: for tests and for smoke runs (noisy)."""
        return cls(warmup=1, rounds=3, runs_per_round=2, round_target_ms=2.0,
                   max_runs_per_round=5, clock=clock)


class CacheFlusher:
    """Evicts the CPU caches by writing a buffer larger than them (``mb`` MiB)."""

    def __init__(self, mb: float) -> None:
        self.buf = np.ones(max(1, int(mb * 2 ** 20 / 8)), dtype=np.float64) if mb > 0 else None

    def __call__(self) -> None:
        if self.buf is not None:
            self.buf += 1.0


def summarise(samples_ms: Sequence[float], round_medians: Sequence[float] = (),
              overhead_ms: float = 0.0, wall_ms: Sequence[float] | None = None,
              clock: str = "wall") -> Measurement:
    """Median and spread of timed runs (ms); ``overhead_ms`` is subtracted from the median."""
    arr = np.asarray(samples_ms, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("summarise: no timed runs")
    med = float(np.median(arr))
    q1, q3 = np.percentile(arr, [25, 75])
    mad = float(np.median(np.abs(arr - med)))
    spread = float(max(round_medians) - min(round_medians)) if len(round_medians) > 1 else 0.0
    wall = float(np.median(wall_ms)) if wall_ms is not None and len(wall_ms) else med
    return Measurement(latency_ms=max(med - overhead_ms, 0.0), iqr_ms=float(q3 - q1), mad_ms=mad,
                       n=int(arr.size), rounds_spread_ms=spread, overhead_ms=float(overhead_ms),
                       raw_ms=med, wall_ms=wall, clock=clock)


class Backend(ABC):
    """Base class of measurement backends.

    Subclasses implement :meth:`prepare` and :attr:`settings`; :meth:`measure_many` is the
    shared timing protocol. ``subtract_overhead`` removes the backend's fixed per-call cost
    (measured on a one-element model by :meth:`calibrate_overhead`) from every kernel
    measurement, so that a network predicted as a sum of N kernels does not count that cost
    N times.
    """

    name: str = "backend"

    def __init__(self, *, plan: TimingPlan | None = None) -> None:
        self.plan = plan or TimingPlan()
        self.overhead_ms: float = 0.0

    # ---------------------------------------------------------------- to implement
    @abstractmethod
    def prepare(self, onnx_model: bytes) -> Runnable:
        """Load a serialised ONNX model and bind random inputs of its (static) shapes."""

    @property
    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """What fixes the measured numbers (library version, threads, optimisation level);
        recorded in the package manifest."""

    def profile_nodes(self, onnx_model: bytes, *, runs: int = 10) -> list["NodeTime"] | None:
        """Per-operator times of the model as the backend runs it (after its own graph
        rewrites), or None when the backend cannot tell. Used to take the cost of the
        measurement harness (layout conversions at the model's inputs and outputs, context
        operators) out of a kernel's latency."""
        return None

    # ---------------------------------------------------------------- shared protocol
    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **self.settings, "overhead_ms": round(self.overhead_ms, 6),
                "timing": asdict(self.plan)}

    def measure(self, onnx_model: bytes, *, subtract_overhead: bool = False) -> Measurement:
        """Latency (ms) of one serialised ONNX model."""
        return self.measure_many([onnx_model], subtract_overhead=subtract_overhead)[0]

    def measure_many(self, onnx_models: Sequence[bytes], *, subtract_overhead: bool = False,
                     plan: TimingPlan | None = None) -> list[Measurement]:
        """Latency of several models, their repeats interleaved (see :class:`TimingPlan`)."""
        runnables = [self.prepare(m) for m in onnx_models]
        try:
            return self.time_runnables(runnables, plan=plan,
                                       overhead_ms=self.overhead_ms if subtract_overhead else 0.0)
        finally:
            for r in runnables:
                r.close()

    def time_runnables(self, runnables: Sequence[Runnable], *, plan: TimingPlan | None = None,
                       overhead_ms: float = 0.0) -> list[Measurement]:
        plan = plan or self.plan
        wall = time.perf_counter
        cpu = time.thread_time if plan.clock == "thread" else time.perf_counter
        flush = CacheFlusher(plan.flush_mb)
        n = len(runnables)
        reps = []
        for r in runnables:
            t0 = wall()
            for _ in range(max(plan.warmup, 1)):
                r.run()
            one = (wall() - t0) * 1e3 / max(plan.warmup, 1)
            reps.append(int(min(plan.max_runs_per_round,
                                max(plan.runs_per_round, plan.round_target_ms / max(one, 1e-6)))))
        samples: list[list[float]] = [[] for _ in range(n)]
        walls: list[list[float]] = [[] for _ in range(n)]
        round_meds: list[list[float]] = [[] for _ in range(n)]
        rng = random.Random(plan.seed)
        order = list(range(n))
        for _ in range(plan.rounds):
            rng.shuffle(order)
            for i in order:
                run = runnables[i].run
                this_round = []
                for _ in range(reps[i]):
                    flush()
                    w0 = wall()
                    c0 = cpu()
                    run()
                    c1 = cpu()
                    w1 = wall()
                    this_round.append((c1 - c0) * 1e3)
                    walls[i].append((w1 - w0) * 1e3)
                samples[i].extend(this_round)
                round_meds[i].append(statistics.median(this_round))
        return [summarise(s, rm, overhead_ms, w, plan.clock)
                for s, rm, w in zip(samples, round_meds, walls)]

    def calibrate_overhead(self, *, repeats: int = 3) -> float:
        """Measure the fixed per-call cost (ms) as the latency of a one-element Relu model
        (the lowest of ``repeats`` medians: load from other processes only adds to a fixed
        cost); stores it in :attr:`overhead_ms` and returns it."""
        from ..onnx_utils import tiny_relu_model

        model = tiny_relu_model()
        plan = TimingPlan(warmup=20, rounds=5, runs_per_round=200, max_runs_per_round=200,
                          clock=self.plan.clock)
        if self.plan.flush_mb > 0:
            plan = TimingPlan(warmup=5, rounds=5, runs_per_round=10, max_runs_per_round=10,
                              clock=self.plan.clock, flush_mb=self.plan.flush_mb)
        meds = [self.measure_many([model], plan=plan)[0].raw_ms for _ in range(repeats)]
        self.overhead_ms = float(np.min(meds))
        return self.overhead_ms


_BACKENDS: dict[str, Callable[..., Backend]] = {}


def register_backend(name: str, factory: Callable[..., Backend]) -> None:
    """Make a backend available to :func:`get_backend` and ``nnmeter-nas predictors build``."""
    _BACKENDS[name] = factory


def get_backend(name: str, **kwargs: Any) -> Backend:
    """Instantiate a registered backend by name (``"onnxruntime-cpu"``, ...)."""
    from . import onnxruntime_cpu  # noqa: F401  (registers the built-in backend)

    if name not in _BACKENDS:
        raise ValueError(f"unknown backend {name!r}; available: {sorted(_BACKENDS)}. Register "
                         "a new one with nnmeter_nas.builder.backends.register_backend().")
    return _BACKENDS[name](**kwargs)


# Backend settings that make a measurement host-specific: a predictor measured under other
# values is another device (instruction set, CPU, library version, threads).
HOST_KEYS = ("machine", "processor", "isa", "version", "intra_op_num_threads",
             "graph_optimization_level")


def host_mismatch(built: dict[str, Any], here: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The :data:`HOST_KEYS` whose recorded value (``built``, a package's
    ``source.backend``) differs from this host's backend settings (``here``), as ``{key:
    (built, here)}``; keys the package does not record are not compared."""
    return {k: (built.get(k), here.get(k)) for k in HOST_KEYS
            if built.get(k) is not None and built.get(k) != here.get(k)}


def backend_from_settings(settings: dict[str, Any]) -> Backend:
    """A backend set up as a package manifest recorded it (``source.backend``, whose
    ``name`` is a registered backend with a ``from_settings`` constructor)."""
    from . import onnxruntime_cpu  # noqa: F401

    name = settings.get("name")
    factory = _BACKENDS.get(name)
    if factory is None or not hasattr(factory, "from_settings"):
        raise ValueError(f"cannot set up backend {name!r} from recorded settings; available: "
                         f"{sorted(k for k, f in _BACKENDS.items() if hasattr(f, 'from_settings'))}")
    return factory.from_settings(settings)


def list_backends() -> list[str]:
    from . import onnxruntime_cpu  # noqa: F401

    return sorted(_BACKENDS)
