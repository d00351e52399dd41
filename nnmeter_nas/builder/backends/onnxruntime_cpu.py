"""onnxruntime on CPU, the backend of the built-in predictor.

Sessions run with a fixed ``intra_op_num_threads`` (default 1), ``inter_op_num_threads=1``,
sequential execution and the graph optimisation level a user gets by default
(``ORT_ENABLE_ALL``: constant folding, Conv+BN+activation fusion, NCHWc layout on x86).
Inputs and outputs are bound once with IO binding, so a timed run is one
``run_with_iobinding`` call: no numpy conversion or output copy is timed.
"""
from __future__ import annotations

import platform
from typing import Any

import numpy as np

from .base import Backend, CacheFlusher, NodeTime, Runnable, TimingPlan, register_backend

_ONNX_TO_NUMPY = {1: np.float32, 7: np.int64, 6: np.int32, 9: np.bool_, 10: np.float16,
                  11: np.float64}
_ORT_TO_NUMPY = {"tensor(float)": np.float32, "tensor(int64)": np.int64,
                 "tensor(int32)": np.int32, "tensor(bool)": np.bool_,
                 "tensor(float16)": np.float16, "tensor(double)": np.float64}

_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
           "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


class _OrtRunnable(Runnable):
    def __init__(self, session: Any, seed: int = 0) -> None:
        import onnxruntime as ort

        self.session = session
        self.binding = session.io_binding()
        rng = np.random.default_rng(seed)
        self._keep = []
        for inp in session.get_inputs():
            shape = inp.shape
            if any(not isinstance(d, int) or d <= 0 for d in shape):
                raise ValueError(f"onnxruntime backend: input {inp.name!r} has a dynamic shape "
                                 f"{shape}; export the model with a fixed input shape")
            dtype = _ORT_TO_NUMPY.get(inp.type)
            if dtype is None:
                raise ValueError(f"onnxruntime backend: input {inp.name!r} has unsupported "
                                 f"type {inp.type}")
            arr = rng.standard_normal(shape).astype(dtype) if dtype in (np.float32, np.float64,
                                                                         np.float16) \
                else np.zeros(shape, dtype=dtype)
            val = ort.OrtValue.ortvalue_from_numpy(arr)
            self._keep.append(val)
            self.binding.bind_ortvalue_input(inp.name, val)
        for out in session.get_outputs():
            self.binding.bind_output(out.name, "cpu")
        # The first run allocates the outputs; later runs reuse the bound OrtValues.
        session.run_with_iobinding(self.binding)
        outs = self.binding.get_outputs()
        self.binding.clear_binding_outputs()
        for out, val in zip(session.get_outputs(), outs):
            self._keep.append(val)
            self.binding.bind_ortvalue_output(out.name, val)

    def run(self) -> None:
        self.session.run_with_iobinding(self.binding)

    def close(self) -> None:
        self.binding = None
        self.session = None
        self._keep = []


class OnnxRuntimeCPUBackend(Backend):
    """Measure ONNX models with onnxruntime's CPU execution provider.

    Parameters
    ----------
    threads:
        ``intra_op_num_threads`` (default 1: the latency of one core, the least noisy on a
        shared machine).
    optimization:
        ``"all"`` (default, what ``InferenceSession`` does when not told otherwise),
        ``"extended"``, ``"basic"`` or ``"disable"``.
    plan:
        Warm-up and repeat counts, see :class:`~nnmeter_nas.builder.backends.TimingPlan`.
        The default times runs with the calling thread's CPU clock when ``threads == 1``
        (onnxruntime then computes on the calling thread, so this is the latency with the
        time the OS gave to other processes left out) and with the wall clock otherwise.
    """

    name = "onnxruntime-cpu"

    def __init__(self, *, threads: int = 1, optimization: str = "all",
                 plan: TimingPlan | None = None) -> None:
        if plan is None:
            plan = TimingPlan(clock="thread" if int(threads) == 1 else "wall")
        super().__init__(plan=plan)
        if optimization not in _LEVELS:
            raise ValueError(f"onnxruntime backend: optimization must be one of "
                             f"{sorted(_LEVELS)}, got {optimization!r}")
        if int(threads) < 1:
            raise ValueError(f"onnxruntime backend: threads must be >= 1, got {threads}")
        self.threads = int(threads)
        self.optimization = optimization

    def session_options(self) -> Any:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                              _LEVELS[self.optimization])
        so.log_severity_level = 3
        # Threads spin-wait between ops by default; with one thread there is nothing to wait
        # for, and on a shared machine spinning only steals time from others.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return so

    def prepare(self, onnx_model: bytes) -> Runnable:
        import onnxruntime as ort

        sess = ort.InferenceSession(onnx_model, sess_options=self.session_options(),
                                    providers=["CPUExecutionProvider"])
        return _OrtRunnable(sess)

    def profile_nodes(self, onnx_model: bytes, *, runs: int = 10) -> list[NodeTime]:
        """Per-node times (ms, mean of the faster half of ``runs``) from onnxruntime's profiler,
        for the graph as optimised (fused Conv, NCHWc ``ReorderInput``/``ReorderOutput``
        nodes included). The profiler's times are wall-clock times. With the plan's
        ``flush_mb`` the caches are flushed before every run, as when timing."""
        import json
        import os
        import tempfile

        import onnx
        import onnxruntime as ort

        with tempfile.TemporaryDirectory(prefix="nnmeter_nas_prof_") as tmp:
            so = self.session_options()
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(tmp, "prof")
            opt_path = os.path.join(tmp, "optimized.onnx")
            so.optimized_model_filepath = opt_path
            sess = ort.InferenceSession(onnx_model, sess_options=so,
                                        providers=["CPUExecutionProvider"])
            runner = _OrtRunnable(sess)
            flush = CacheFlusher(self.plan.flush_mb)
            for _ in range(2 + max(runs, 1)):
                flush()
                runner.run()
            prof_path = sess.end_profiling()
            with open(prof_path) as fh:
                events = json.load(fh)
            graph = onnx.load(opt_path, load_external_data=False).graph
            runner.close()
        # The first 3 runs are the IO-binding setup run and the warm-up; keep the rest.
        durs: dict[str, list[float]] = {}
        for ev in events:
            if ev.get("cat") == "Node" and str(ev.get("name", "")).endswith("_kernel_time"):
                durs.setdefault(ev["name"][: -len("_kernel_time")], []).append(ev["dur"] / 1e3)
        model_inputs = {i.name for i in graph.input}
        model_outputs = {o.name for o in graph.output}
        out = []
        for node in graph.node:
            times = durs.get(node.name)
            if not times:
                continue
            times = np.sort(np.asarray(times[3:] or times))
            # Mean of the faster half: a run slowed down by other processes only ever adds
            # time, and averaging keeps a resolution finer than the profiler's 1 us.
            fast = times[: max(1, (len(times) + 1) // 2)]
            attrs = {}
            for a in node.attribute:
                if a.type == onnx.AttributeProto.INT:
                    attrs[a.name] = int(a.i)
                elif a.type == onnx.AttributeProto.INTS:
                    attrs[a.name] = [int(v) for v in a.ints]
            out.append(NodeTime(name=node.name, op_type=node.op_type,
                                ms=float(np.mean(fast)), inputs=list(node.input),
                                outputs=list(node.output),
                                reads_model_input=any(i in model_inputs for i in node.input),
                                writes_model_output=any(o in model_outputs for o in node.output),
                                attrs=attrs))
        return out

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> "OnnxRuntimeCPUBackend":
        """The backend as a package manifest recorded it (``source.backend``: threads,
        optimisation level, timing clock)."""
        level = settings.get("graph_optimization_level", "ORT_ENABLE_ALL")
        names = {v: k for k, v in _LEVELS.items()}
        if level not in names:
            raise ValueError(f"onnxruntime backend: unknown graph_optimization_level {level!r}")
        backend = cls(threads=int(settings.get("intra_op_num_threads", 1)),
                      optimization=names[level])
        clock = (settings.get("timing") or {}).get("clock")
        if clock:
            backend.plan = TimingPlan(clock=clock)
        return backend

    @property
    def settings(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {"library": "onnxruntime", "version": ort.__version__,
                "provider": "CPUExecutionProvider", "intra_op_num_threads": self.threads,
                "inter_op_num_threads": 1, "execution_mode": "sequential",
                "graph_optimization_level": _LEVELS[self.optimization],
                "allow_spinning": False, "io_binding": True,
                "machine": platform.machine(), "processor": cpu_name(), "isa": cpu_isa()}


def _cpuinfo_field(key: str) -> str | None:
    """The first ``key`` line of /proc/cpuinfo (its value), or None where there is none."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_isa() -> str:
    """The widest SIMD instruction set of this CPU, as onnxruntime's kernels pick theirs:
    ``avx512`` / ``avx2`` / ``avx`` / ``sse`` on x86-64 (from /proc/cpuinfo), ``neon`` on arm64,
    else ``unknown``. Two CPUs with the same model name can differ here (virtual machines
    hide the generation), and latencies differ with it: a predictor built on an AVX2 host
    over-predicts an AVX-512 host by 2x and more, unevenly across kernel types."""
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "neon"
    flags = _cpuinfo_field("flags")
    if flags is None:
        return "unknown"
    have = set(flags.split())
    for isa, needed in (("avx512", {"avx512f", "avx512bw", "avx512vl"}), ("avx2", {"avx2", "fma"}),
                        ("avx", {"avx"}), ("sse", {"sse4_1"})):
        if needed <= have:
            return isa
    return "unknown"


def cpu_name() -> str:
    return _cpuinfo_field("model name") or platform.processor() or "unknown"


register_backend(OnnxRuntimeCPUBackend.name, OnnxRuntimeCPUBackend)
