"""Per-space calibration of a kernel-level predictor against measured whole networks.

A kernel timed alone is not quite the same kernel inside a network: there its weights may have
been evicted from the caches by the layers before it, the runtime may insert layout
conversions around it, and every operator pays a dispatch cost. How much differs between
search spaces (a 224x224 ShuffleNet candidate with megabytes of weights against a 32x32
NAS-Bench-201 cell that fits in L2) but is steady within one. A :class:`Calibration` corrects
a predictor for one space with a few parameters fitted on measured networks of that space::

    latency' = scale[regressor] * latency + per_kernel_ms      (every predicted kernel)

It is linear per kernel, so lookup tables and everything built on kernel predictions stay
exact. Calibrations are stored in the package manifest under ``"calibrations"`` (one per space)
and chosen with ``load_predictor(name, calibration="spos")``; they are fitted by
:func:`nnmeter_nas.builder.calibrate.fit_calibration`, which needs the device to measure on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping


@dataclass(frozen=True)
class Calibration:
    """Correction of kernel latencies for one search space.

    ``scales`` maps regressor names to a factor (dimensionless); regressors not named get
    ``default_scale``. ``per_kernel_ms`` (ms) is added to every predicted kernel. ``info``
    says what it was fitted on (space, number of networks, fit error).
    """

    scales: Mapping[str, float]
    default_scale: float = 1.0
    per_kernel_ms: float = 0.0
    info: Mapping[str, Any] = field(default_factory=dict)

    def scale(self, regressor: str) -> float:
        return float(self.scales.get(regressor, self.default_scale))

    def kernel_ms(self, regressor: str, latency_ms: float) -> float:
        """One predicted kernel's calibrated latency (ms)."""
        return self.scale(regressor) * latency_ms + self.per_kernel_ms

    def latency_ms(self, kernels: Iterable[Any], overhead_ms: float = 0.0) -> float:
        """Calibrated latency (ms) of an uncalibrated breakdown (``KernelPrediction`` items
        with ``regressor``, ``latency_ms`` and ``status``)."""
        total = float(overhead_ms)
        for k in kernels:
            total += self.kernel_ms(k.regressor, k.latency_ms) if k.status == "predicted" \
                else k.latency_ms
        return total

    def to_dict(self) -> dict[str, Any]:
        return {"scales": {k: float(v) for k, v in sorted(self.scales.items())},
                "default_scale": float(self.default_scale),
                "per_kernel_ms": float(self.per_kernel_ms), "info": dict(self.info)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Calibration":
        return cls(scales={str(k): float(v) for k, v in d.get("scales", {}).items()},
                   default_scale=float(d.get("default_scale", 1.0)),
                   per_kernel_ms=float(d.get("per_kernel_ms", 0.0)),
                   info=dict(d.get("info", {})))
