"""Helpers for tests and examples: a small deterministic predictor built in memory.

:func:`make_dummy_predictor` returns a :class:`LatencyPredictor` whose regressors are exact
piecewise-constant functions of the features (no measurement, no training), so tests of the
layers above the engine get stable, plausible numbers: convolution latency grows with FLOPs,
element-wise kernels with ``hw * hw * c``.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .features.extract import FEATURE_NAMES
from .kernels.fusion_rules import FusionRules
from .regressors.forest import TreeEnsemble


def grid_tree(features: Sequence[int], thresholds: Sequence[Sequence[float]],
              value: Callable[[tuple[float, ...]], float], n_features: int) -> TreeEnsemble:
    """A single regression tree splitting on ``features[0]`` at ``thresholds[0]``, then on
    ``features[1]``..., whose leaf value is ``value(point)`` at a representative point of the
    cell (the cell's upper threshold, or 2x the last threshold for the open cell)."""
    left: list[int] = []
    right: list[int] = []
    feat: list[int] = []
    thr: list[float] = []
    val: list[float] = []

    def new() -> int:
        left.append(-1), right.append(-1), feat.append(-1), thr.append(0.0), val.append(0.0)
        return len(left) - 1

    def rep(ts: Sequence[float], i: int) -> float:
        return ts[i] if i < len(ts) else ts[-1] * 2.0

    def build(level: int, point: tuple[float, ...]) -> int:
        if level == len(features):
            n = new()
            val[n] = float(value(point))
            return n
        ts = thresholds[level]

        def split(lo: int, hi: int) -> int:  # cells lo..hi inclusive
            if lo == hi:
                return build(level + 1, point + (rep(ts, lo),))
            mid = (lo + hi) // 2
            n = new()
            feat[n], thr[n] = features[level], float(ts[mid])
            left[n] = split(lo, mid)
            right[n] = split(mid + 1, hi)
            return n

        return split(0, len(ts))

    build(0, ())
    return TreeEnsemble(left=np.array(left), right=np.array(right), feature=np.array(feat),
                        threshold=np.array(thr), value=np.array(val), roots=np.array([0]),
                        n_features=n_features, meta={"origin": "nnmeter_nas.testing.grid_tree"})


_LOG_GRID = [float(x) for x in np.geomspace(1e-3, 1e4, 36)]
_HW = [1, 2, 4, 7, 8, 14, 16, 28, 32, 56, 64, 112, 128, 224]
_CH = [3, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 2048]


def _dummy_regressors() -> dict[str, TreeEnsemble]:
    regs = {}
    for reg, names in FEATURE_NAMES.items():
        n = len(names)
        if reg in ("conv-bn-relu", "dwconv-bn-relu"):
            scale = 0.004 if reg == "conv-bn-relu" else 0.012
            regs[reg] = grid_tree([5], [_LOG_GRID], lambda p, s=scale: 0.002 + s * p[0], n)
        elif reg == "fc":
            regs[reg] = grid_tree([2], [_LOG_GRID], lambda p: 0.003 + 0.004 * p[0], n)
        elif reg == "concat":
            regs[reg] = grid_tree([0, 2], [_HW, _CH],
                                  lambda p: 0.001 + 2e-7 * p[0] * p[0] * p[1], n)
        else:
            # [hw, c...]: element-wise cost proportional to hw*hw*c
            regs[reg] = grid_tree([0, 1], [_HW, _CH],
                                  lambda p: 0.001 + 1e-7 * p[0] * p[0] * p[1], n)
    return regs


def make_dummy_predictor(device: str = "dummy", *, directory: str | Path | None = None,
                         rules: FusionRules | None = None, strict: bool = False):
    """A deterministic :class:`LatencyPredictor` for tests (written to ``directory`` or a
    temporary directory, then loaded like any package)."""
    from .packages.format import write_package
    from .predictor import LatencyPredictor
    from .packages.format import PredictorPackage

    directory = Path(directory or tempfile.mkdtemp(prefix="nnmeter-nas-dummy-"))
    dest = directory / device
    write_package(dest, name=device, version="0.0", device=device, framework="none (synthetic)",
                  regressors=_dummy_regressors(), fusion_rules=rules or FusionRules.default(),
                  feature_set="nnmeter-nas-1", free_kernel_types=["reshape"],
                  description="synthetic predictor for tests: not a real device",
                  source={"kind": "synthetic"}, overwrite=True)
    return LatencyPredictor(PredictorPackage.load(dest), strict=strict)
