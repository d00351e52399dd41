"""Detect a device's fusion rules by measurement, as nn-Meter does.

For each pair of operator types ``a -> b`` that can follow each other, three models are
timed: ``a`` alone, ``b`` alone and the block ``a -> b``. The pair is fused (``"obey":
true``) when the block saves more than ``alpha`` (nn-Meter: 0.5) of the cheaper operator's
time compared with the sum of its parts::

    lat(a) + lat(b) - lat(a -> b) > alpha * min(lat(a), lat(b))

Latencies are kernel latencies as the builder measures them: every input and output of a test
model sits next to a convolution stand-in, as operators do inside a network (some fusions,
e.g. onnxruntime's fused residual add, only happen on a convolution's blocked layout), and the
backend's per-call cost and the stand-ins' time are taken out. The result is written in
nn-Meter's ``fusion_rules.json`` format, with the measured latencies kept under ``latency``.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..kernels import FusionRules
from .backends.base import Backend, TimingPlan
from .measure import KernelMeasurer, _wrap_in_context

#: Pairs tested by default: the operator pairs of nn-Meter's rule tester that occur in mobile
#: CNNs, plus activations (relu, hswish) and residual adds after (depthwise) convolutions.
DEFAULT_PAIRS: tuple[tuple[str, str], ...] = (
    ("conv", "bn"), ("conv", "relu"), ("conv", "hswish"), ("conv", "add"), ("conv", "conv"),
    ("conv", "dwconv"), ("conv", "avgpool"), ("conv", "maxpool"), ("conv", "concat"),
    ("dwconv", "bn"), ("dwconv", "relu"), ("dwconv", "hswish"), ("dwconv", "add"),
    ("dwconv", "conv"), ("dwconv", "dwconv"),
    ("bn", "relu"), ("bn", "conv"), ("add", "relu"), ("add", "add"), ("add", "conv"),
    ("relu", "conv"), ("relu", "add"), ("relu", "dwconv"), ("relu", "avgpool"),
    ("avgpool", "conv"), ("avgpool", "relu"), ("maxpool", "conv"), ("concat", "conv"),
    ("concat", "relu"), ("fc", "relu"), ("fc", "fc"), ("relu", "fc"),
)

ONE_D_OPS = frozenset({"fc"})


@dataclass
class FusionTestConfig:
    """Shapes of the test operators. nn-Meter's rule tester uses 28x28x64 -> 128 with 3x3
    kernels; here a 1x1 convolution on 56x56x16 makes the cheap operators (relu, bn, add),
    whose saving is what is detected, a good fraction of the pair's time, so that the noise of
    a shared machine does not decide the rule."""

    hw: int = 56
    channels: int = 16
    conv_kernel: int = 1
    fc_features: int = 428
    alpha: float = 0.5


def _op_factory(op: str, cfg: FusionTestConfig) -> Callable[[list[int]], tuple[Any, list[int],
                                                                                  int]]:
    """``make(input_shape) -> (module, output_shape, n_extra_inputs)`` for an op type."""
    import torch
    from torch import nn

    class Binary(nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, x, other):
            return self.fn(x, other)

    def make(shape: list[int]):
        c = shape[1]
        if op == "conv":
            k = cfg.conv_kernel
            return nn.Conv2d(c, c, k, 1, k // 2, bias=False), shape, 0
        if op == "dwconv":
            return nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False), shape, 0
        if op == "bn":
            return nn.BatchNorm2d(c), shape, 0
        if op == "relu":
            return nn.ReLU(), shape, 0
        if op == "hswish":
            return nn.Hardswish(), shape, 0
        if op == "avgpool":
            return nn.AvgPool2d(3, 1, 1), shape, 0
        if op == "maxpool":
            return nn.MaxPool2d(3, 1, 1), shape, 0
        if op == "add":
            return Binary(lambda a, b: a + b), shape, 1
        if op == "concat":
            return Binary(lambda a, b: torch.cat([a, b], 1)), [shape[0], 2 * c] + shape[2:], 1
        if op == "fc":
            return nn.Linear(shape[-1], shape[-1]), shape, 0
        raise ValueError(f"fusion test: no test operator for {op!r}")

    return make


def _pair_models(a: str, b: str, cfg: FusionTestConfig) -> dict[str, tuple[Any, list]]:
    """The three test modules of pair ``a -> b`` with their input shapes."""
    from torch import nn

    shape = [1, cfg.fc_features] if a in ONE_D_OPS or b in ONE_D_OPS else \
        [1, cfg.channels, cfg.hw, cfg.hw]
    mod_a, shape_a, extra_a = _op_factory(a, cfg)(shape)
    mod_b, shape_b, extra_b = _op_factory(b, cfg)(shape_a)

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = mod_a, mod_b

        def forward(self, x, *others):
            y = self.a(x, *others[:extra_a])
            return self.b(y, *others[extra_a:])

    return {"a": (mod_a, [shape] * (1 + extra_a)),
            "b": (mod_b, [shape_a] * (1 + extra_b)),
            "block": (Block(), [shape] + [shape] * extra_a + [shape_a] * extra_b)}


def _export(module: Any, shapes: list[list[int]]) -> bytes:
    # BatchNormalization must stay a node here (the engine's exporter folds it into the
    # convolution), so that the backend's own handling of conv -> bn is what gets measured.
    import torch

    buf = io.BytesIO()
    args = tuple(torch.randn(*s) for s in shapes)
    with torch.no_grad():
        torch.onnx.export(module.eval(), args, buf, dynamo=False, opset_version=13,
                          do_constant_folding=False,
                          input_names=[f"input_{i}" for i in range(len(args))])
    return buf.getvalue()


def detect_fusion_rules(backend: Backend, *, pairs: Sequence[tuple[str, str]] = DEFAULT_PAIRS,
                        config: FusionTestConfig | None = None,
                        plan: TimingPlan | None = None, repeats: int = 5,
                        progress: Callable[[int, int], None] | None = None
                        ) -> tuple[FusionRules, dict[str, dict[str, Any]]]:
    """Measure every pair and return the rules and the raw per-pair results.

    The rules hold ``BF_<a>_<b>`` for every tested pair plus ``MON = 0`` (a node with several
    consumers never fuses; nn-Meter's default, not measured here). Each model is timed in
    ``repeats`` separate interleaved batches and its median is used. ``progress(done,
    total)`` is called after each model's operator profile. When the backend reports which
    operators it ran, a pair whose timing disagrees with that report is timed again (the
    timing still decides; ``backend_fused`` records the report).
    """
    import warnings

    cfg = config or FusionTestConfig()
    measurer = KernelMeasurer(backend, FusionRules({}), use_context=True, reference=False)
    names: list[str] = []
    models: list[bytes] = []
    for a, b in pairs:
        for part, (mod, shapes) in _pair_models(a, b, cfg).items():
            if len(shapes[0]) == 4:
                mod = _wrap_in_context(mod, shapes, [True] * len(shapes), [True])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                models.append(_export(mod, shapes))
            names.append(f"{a}_{b}:{part}")
    plan = plan or TimingPlan(warmup=5, rounds=7, runs_per_round=5, round_target_ms=5.0,
                              max_runs_per_round=100, clock=backend.plan.clock)
    import statistics

    raws: list[list[float]] = [[] for _ in models]
    batch = 0

    def time_models(idx: list[int]) -> None:
        nonlocal batch
        for _ in range(max(1, repeats)):
            plan_r = TimingPlan(**{**plan.__dict__, "seed": plan.seed + batch})
            batch += 1
            for i, m in zip(idx, backend.measure_many([models[i] for i in idx], plan=plan_r)):
                raws[i].append(m.raw_ms)

    time_models(list(range(len(models))))
    shares: list[float] = []
    n_ops: list[int | None] = []
    for i, model in enumerate(models):
        share, ops = measurer.kernel_profile(model, statistics.median(raws[i]), runs=30)
        shares.append(share)
        n_ops.append(ops)
        if progress is not None:
            progress(i + 1, len(names))
    index = {n: i for i, n in enumerate(names)}

    def latency(name: str) -> float:
        i = index[name]
        return max(statistics.median(raws[i]) - backend.overhead_ms, 0.0) * shares[i]

    def decide(a: str, b: str) -> tuple[bool, bool | None]:
        la, lb, lblock = (latency(f"{a}_{b}:{p}") for p in ("a", "b", "block"))
        ops = [n_ops[index[f"{a}_{b}:{p}"]] for p in ("a", "b", "block")]
        structural = None if None in ops else bool(ops[2] < ops[0] + ops[1])
        return bool(la + lb - lblock > cfg.alpha * min(la, lb)), structural

    # Where the operators the backend reports running disagree with the timing, the pair is
    # timed again (twice at most) and the pooled medians decide: the rule stays a measured one.
    for _ in range(2):
        doubtful = [(a, b) for a, b in pairs if decide(a, b)[1] not in (None, decide(a, b)[0])]
        if not doubtful:
            break
        time_models([index[f"{a}_{b}:{p}"] for a, b in doubtful for p in ("a", "b", "block")])
    rules: dict[str, dict[str, Any]] = {}
    for a, b in pairs:
        la, lb, lblock = (latency(f"{a}_{b}:{p}") for p in ("a", "b", "block"))
        obey, structural = decide(a, b)
        rules[f"BF_{a}_{b}"] = {"obey": obey, "latency": {
            a if a != b else f"{a}_1": round(la, 6), b if a != b else f"{b}_2": round(lb, 6),
            "block": round(lblock, 6), "saving": round(la + lb - lblock, 6)},
            "timed_batches": len(raws[index[f"{a}_{b}:block"]])}
        if structural is not None:
            rules[f"BF_{a}_{b}"]["backend_fused"] = structural
    rules["MON"] = {"obey": 0, "measured": False}
    return FusionRules.from_dict(rules), rules
