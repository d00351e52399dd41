"""Measure kernel configurations: module -> engine features, module in context -> latency.

For one configuration of a :class:`~nnmeter_nas.builder.kernel_specs.KernelSpec`:

1. *Features.* The module, wrapped in its context (a 1x1 max-pool on every input/output the
   spec marks as fed by / feeding a convolution), is exported to ONNX with the engine's
   exporter, read back with the engine's ONNX front end, split into kernels with the
   device's fusion rules (``detect_kernels``); the context max-pools are dropped and the
   features are ``extract_features`` of the kernel left. The check that the engine finds
   exactly the expected kernel (and nothing else) catches a module that does not compute
   what its spec claims.
2. *Latency.* The same ONNX model is timed by the backend (median of interleaved repeats),
   and the backend's fixed per-call cost, timed in the same batch on a one-element model, is
   taken out (a network pays it once, not once per kernel). When the backend can profile operators, the result is
   scaled by the kernel's share of the profiled operator time: the context operators and
   the layout conversions at the model's own inputs and outputs are the harness, the rest
   (including layout conversions between the context and the kernel, which a network pays
   too) is the kernel. A share rather than a difference, because the profiler's times are
   wall-clock times, inflated on a busy machine where the timed runs use the thread's CPU
   clock; the inflation mostly cancels in a ratio.

All latencies are milliseconds.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..errors import KernelMismatchError
from ..features import extract_features, regressor_name
from ..kernels import FusionRules, detect_kernels
from .backends.base import Backend, NodeTime, TimingPlan
from .kernel_specs import Config, KernelSpec

# Smallest latency a kernel is recorded with (ms; about what onnxruntime takes to dispatch one
# operator): kernels below the resolution of the measurement get it, and fitting works on
# log-latency.
MIN_LATENCY_MS = 2e-4


@dataclass
class PreparedKernel:
    """A configuration ready to time: its features and the ONNX model to measure."""

    spec: str
    config: Config
    regressor: str
    kernel_type: str
    features: list[float]
    folded: list[str]
    model: bytes
    flops: float = 0.0


@dataclass
class KernelRecord:
    """One measured configuration, as stored (see :mod:`nnmeter_nas.builder.store`).

    ``latency_ms`` is the kernel's cost inside a network: ``(raw_ms - overhead_ms) *
    share`` (at least :data:`MIN_LATENCY_MS`), where ``share`` is the kernel's share of the
    profiled operator time (1 without profiling), ``harness_ms = (raw_ms - overhead_ms) *
    (1 - share)`` and ``overhead_ms`` is the backend's per-call cost, timed in the same
    interleaved batch as the kernel (a one-element model). ``iqr_ms``/``mad_ms``/``rounds_spread_ms``
    are the spread of the timed runs.
    """

    key: str
    spec: str
    config: Config
    regressor: str
    kernel_type: str
    features: list[float]
    latency_ms: float
    raw_ms: float
    overhead_ms: float
    harness_ms: float
    wall_ms: float
    iqr_ms: float
    mad_ms: float
    rounds_spread_ms: float
    n_runs: int
    clock: str
    folded: list[str] = field(default_factory=list)
    phase: str = "prior"
    time: float = 0.0
    ref_ms: float | None = None
    loadavg: float | None = None
    share: float = 1.0
    flush_mb: float = 0.0  # caches flushed before every run (cold-weights specs)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        for k, v in d.items():
            if isinstance(v, float):
                d[k] = round(v, 7)
        d["features"] = [round(float(f), 7) for f in self.features]
        return d


def reference_model() -> bytes:
    """A fixed small network (a 3x3 convolution on 28x28x64, a depthwise 3x3 on 56x56x96 and
    a 1x1 projection; a few ms on one core) timed in every batch of kernels to record the
    state of the machine."""
    import torch
    from torch import nn

    from .onnx_utils import export_onnx

    class Reference(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Sequential(nn.Conv2d(64, 64, 3, 1, 1), nn.ReLU())
            self.dw = nn.Sequential(nn.Conv2d(96, 96, 3, 1, 1, groups=96), nn.ReLU(),
                                    nn.Conv2d(96, 24, 1))

        def forward(self, a, b):
            return self.conv(a), self.dw(b)

    g = torch.Generator().manual_seed(0)
    mod = Reference()
    with torch.no_grad():
        for prm in mod.parameters():
            prm.copy_(torch.randn(prm.shape, generator=g) * 0.05)
    return export_onnx(mod, [[1, 64, 28, 28], [1, 96, 56, 56]])


def reference_state_ms(backend: Backend, *, repeats: int = 3,
                       model: bytes | None = None) -> float:
    """How fast the machine runs now: the median time (ms) of :func:`reference_model` timed
    as a build batch times it (the backend's plan, repeats interleaved with a tiny model, so
    with warm caches), over ``repeats`` calls. Comparable with the ``ref_ms`` of the build's
    records; a visit of the reference between large networks is not (it starts with caches
    the network before it evicted, so it reads slower than the machine runs)."""
    from .onnx_utils import tiny_relu_model

    ref = model if model is not None else reference_model()
    tiny = tiny_relu_model()
    times = [backend.measure_many([ref, tiny])[0].raw_ms for _ in range(max(1, repeats))]
    return float(np.median(times))


def config_key(spec: str, config: Config) -> str:
    """Stable identifier of a configuration (the store's resume key)."""
    items = ",".join(f"{k}={config[k]}" for k in sorted(config))
    return f"{spec}|{items}"


def _wrap_in_context(module: Any, input_shapes: list[list[int]],
                     conv_inputs: Sequence[bool], conv_outputs: Sequence[bool]) -> Any:
    import torch
    from torch import nn

    class InContext(nn.Module):
        """The kernel between 1x1 max-pools: stand-ins for convolution neighbours."""

        def __init__(self) -> None:
            super().__init__()
            self.kernel = module
            self.before = nn.ModuleList(nn.MaxPool2d(1, 1) for _ in input_shapes)
            self.after = nn.MaxPool2d(1, 1)

        def forward(self, *xs):
            xs = [b(x) if use and x.dim() == 4 else x
                  for b, x, use in zip(self.before, xs, conv_inputs)]
            out = self.kernel(*xs)
            outs = list(out) if isinstance(out, (tuple, list)) else [out]
            outs = [self.after(o) if i < len(conv_outputs) and conv_outputs[i] and o.dim() == 4
                    else o for i, o in enumerate(outs)]
            return tuple(outs) if len(outs) > 1 else outs[0]

    del torch
    return InContext()


def _is_context_kernel(kernel: Any) -> bool:
    """A kernel that is one of the 1x1 stride-1 max-pool stand-ins of the context."""
    return kernel.type == "maxpool" and list(kernel.attrs.get("ks", [])) == [1, 1] and \
        list(kernel.attrs.get("strides", [1, 1])) == [1, 1]


def is_harness_node(node: NodeTime) -> bool:
    """Whether a profiled operator belongs to the measurement harness rather than the kernel:
    the 1x1 stride-1 max-pools of the context, and layout conversions (onnxruntime's NCHWc
    ``ReorderInput``/``ReorderOutput``) at the model's own inputs and outputs."""
    if node.op_type == "MaxPool" and node.attrs.get("kernel_shape") == [1, 1] and \
            node.attrs.get("strides", [1, 1]) == [1, 1]:
        return True
    if node.op_type == "ReorderInput" and node.reads_model_input:
        return True
    if node.op_type == "ReorderOutput" and node.writes_model_output:
        return True
    return False


class KernelMeasurer:
    """Turns spec configurations into :class:`KernelRecord` s on one backend.

    Parameters
    ----------
    backend:
        The measurement backend (its ``overhead_ms`` is subtracted from every kernel).
    rules:
        The device's fusion rules, used to find the kernel in each module.
    feature_set:
        The engine feature set the package will declare.
    use_context:
        Measure kernels between convolution stand-ins and take the harness out (needs a
        backend that can profile operators; otherwise only the per-call cost is removed).
    """

    def __init__(self, backend: Backend, rules: FusionRules, *,
                 feature_set: str = "nnmeter-nas-3", use_context: bool = True,
                 profile_runs: int = 16, reference: bool = True) -> None:
        from .onnx_utils import tiny_relu_model

        self.backend = backend
        self._reference = reference_model() if reference else None
        self._tiny = tiny_relu_model()
        self.rules = rules
        self.feature_set = feature_set
        self.use_context = use_context
        self.profile_runs = profile_runs

    # ------------------------------------------------------------------ features
    def prepare(self, spec: KernelSpec, config: Config) -> PreparedKernel:
        """Features (from the engine) and the in-context ONNX model of one configuration.

        One export serves both: the engine reads the in-context model, and the context
        stand-ins (1x1 stride-1 max-pools) are dropped from the kernels it reports."""
        from ..graph.onnx_import import onnx_to_graph
        from ..graph.torch_export import export_onnx

        module, shapes = spec.build(config)
        if self.use_context:
            conv_in, conv_out = spec.neighbours(config)
            module = _wrap_in_context(module, shapes, conv_in, conv_out)
        proto = export_onnx(module, shapes if len(shapes) > 1 else shapes[0])
        found = detect_kernels(onnx_to_graph(proto), self.rules)
        kernels = [k for k in found if not _is_context_kernel(k)]
        if len(kernels) + sum(_is_context_kernel(k) for k in found) != len(found) or \
                any(k.type.startswith("maxpool-") and k.attrs.get("ks") == [1, 1]
                    for k in kernels):
            raise KernelMismatchError(f"spec {spec.name!r} config {config}: a context "
                                      "stand-in was fused with the kernel")
        if not kernels:
            raise KernelMismatchError(f"spec {spec.name!r} config {config}: the engine found "
                                      "no kernel in the module")
        regs = [regressor_name(k.type) for k in kernels]
        if spec.regressor:
            if regs != [spec.regressor]:
                raise KernelMismatchError(
                    f"spec {spec.name!r} config {config}: the engine found kernels "
                    f"{[k.type for k in kernels]} (regressors {regs}); expected exactly one "
                    f"{spec.regressor!r} kernel. Check the fusion rules or the spec's module.")
            target, folded = kernels[0], []
        else:
            bad = [r for r in regs if r not in spec.folds]
            if bad:
                raise KernelMismatchError(
                    f"spec {spec.name!r} config {config}: the engine found kernels {regs}; "
                    f"{bad} are not among the kernels this spec may hold ({list(spec.folds)})")
            target, folded = kernels[0], [k.type for k in kernels[1:]]
        feats = extract_features(target, self.feature_set)
        if feats is None:
            raise KernelMismatchError(f"spec {spec.name!r} config {config}: feature set "
                                      f"{self.feature_set!r} defines no features for kernel "
                                      f"type {target.type!r}")
        return PreparedKernel(spec=spec.name, config=dict(config),
                              regressor=regressor_name(target.type), kernel_type=target.type,
                              features=[float(f) for f in feats], folded=folded,
                              model=proto.SerializeToString(), flops=float(spec.flops(config)))

    # ------------------------------------------------------------------ latency
    def kernel_share(self, model: bytes, latency_hint_ms: float, *,
                     runs: int | None = None) -> float:
        """The kernel's share (0..1) of the profiled operator time of ``model`` (1 when the
        backend cannot profile or context is off)."""
        return self.kernel_profile(model, latency_hint_ms, runs=runs)[0]

    def kernel_profile(self, model: bytes, latency_hint_ms: float, *,
                       runs: int | None = None) -> tuple[float, int | None]:
        """``(share, n_ops)``: the kernel's share of the profiled operator time and the number
        of operators the backend ran for it (None when it cannot profile)."""
        if not self.use_context:
            return 1.0, None
        if runs is None:
            runs = int(min(self.profile_runs, max(6, 300.0 / max(latency_hint_ms, 1e-3))))
        nodes = self.backend.profile_nodes(model, runs=runs)
        if not nodes:
            return 1.0, None
        kernel = [n for n in nodes if not is_harness_node(n)]
        total = sum(n.ms for n in nodes)
        if total <= 0:
            return 1.0, len(kernel)
        share = sum(n.ms for n in kernel) / total
        return float(min(max(share, 0.0), 1.0)), len(kernel)

    def measure(self, prepared: Sequence[PreparedKernel], *, phase: str = "prior",
                plan: TimingPlan | None = None) -> list[KernelRecord]:
        """Time a batch of prepared configurations (their repeats interleaved)."""
        import os

        if not prepared:
            return []
        # The per-call cost is timed in every batch, interleaved with the kernels: it drifts
        # with the machine's load like they do.
        models = [p.model for p in prepared] + [self._tiny]
        if self._reference is not None:
            models.append(self._reference)
        ms = self.backend.measure_many(models, plan=plan)
        ref_ms = ms.pop().raw_ms if self._reference is not None else None
        overhead = ms.pop().raw_ms
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        out = []
        for p, m in zip(prepared, ms):
            net = max(m.raw_ms - overhead, 0.0)
            share = self.kernel_share(p.model, m.raw_ms)
            lat = max(net * share, MIN_LATENCY_MS)
            harness = net * (1.0 - share)
            out.append(KernelRecord(
                key=config_key(p.spec, p.config), spec=p.spec, config=p.config,
                regressor=p.regressor, kernel_type=p.kernel_type, features=p.features,
                latency_ms=lat, raw_ms=m.raw_ms, overhead_ms=overhead, share=share,
                harness_ms=harness, wall_ms=m.wall_ms, iqr_ms=m.iqr_ms, mad_ms=m.mad_ms,
                rounds_spread_ms=m.rounds_spread_ms, n_runs=m.n, clock=m.clock,
                folded=p.folded, phase=phase, time=time.time(), ref_ms=ref_ms, loadavg=load,
                flush_mb=float((plan or self.backend.plan).flush_mb)))
        return out


def sample_configs(spec: KernelSpec, n: int, rng: random.Random,
                   skip: set[str] | None = None) -> list[Config]:
    """``n`` distinct prior configurations of ``spec`` whose keys are not in ``skip``."""
    skip = set(skip or ())
    out: list[Config] = []
    tries = 0
    while len(out) < n and tries < 50 * n + 100:
        tries += 1
        cfg = spec.sample(rng)
        key = config_key(spec.name, cfg)
        if key in skip:
            continue
        skip.add(key)
        out.append(cfg)
    return out
