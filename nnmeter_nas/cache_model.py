"""Where a network's weights live: a kernel's latency between warm and cold caches.

A kernel timed alone, over and over, finds its weights in the core's caches. Inside a network
it does only if all the network's weights fit there: a NAS-Bench-201 cell (about 1 MiB of
weights) stays in L2 from one inference to the next, a 224x224 ShuffleNet candidate (13 MiB)
does not, and each of its convolutions reads its weights from the last-level cache or from
memory, which makes its convolutions and the whole network slower than the sum of its kernels
timed warm (``benchmarks/kernel_vs_network.py`` measures the gap;
``benchmarks/results/kernel_vs_network_*.txt``).

A package built with both regimes holds two regressors per kernel type: ``kernels/`` timed
with warm caches and ``kernels-cold/`` timed after ``flush_mb`` MiB were written over the
caches before every run (the kernel's input is still fresh: the harness writes it after the
flush, as the layer before does in a network). A :class:`CacheModel` mixes them by the
network's total weight size ``W`` (MiB of float32 weights, every kernel's)::

    cold_share = 1 / (1 + (midpoint_mib / W) ** slope)
    latency    = scale * (warm_ms + cold_share * (cold_ms - warm_ms)) + per_kernel_ms

for every kernel. ``per_kernel_ms`` is the runtime's dispatch cost of an operator inside a
network, which the harness subtracts with the per-call cost (a fraction of a microsecond, but
NAS-Bench-201 cells are a hundred kernels of 5-10 us). ``midpoint_mib``, ``slope``, ``scale``
and ``per_kernel_ms`` are fitted when the package is built, on random
networks measured whole (:func:`nnmeter_nas.builder.cache_fit.fit_cache_model`); they are
stored in the manifest under ``"cache_model"``. A per-space :mod:`~nnmeter_nas.calibration`
then applies on top of the mixed kernel latencies.

A kernel's latency now depends on the network around it, through ``W`` alone. Lookup tables
over a search space (:mod:`nnmeter_nas.nni`) take each choice's kernels from the sampled
architectures, at their weight sizes; within a space ``W`` moves little (SPOS candidates hold
12-14 MiB), and the table's recorded spread shows what it moves.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np


@dataclass(frozen=True)
class CacheModel:
    """Mix of warm- and cold-cache kernel latencies by a network's weight size.

    ``midpoint_mib`` (MiB): the weight size at which kernels take half their cold extra;
    ``slope`` (dimensionless, > 0): how sharply the share rises around it; ``scale``: a common
    factor on every kernel (what the harness misses whatever the caches hold);
    ``per_kernel_ms`` (ms, >= 0): added to every kernel. ``info`` says what it was fitted on.
    """

    midpoint_mib: float
    slope: float
    scale: float = 1.0
    per_kernel_ms: float = 0.0
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (self.midpoint_mib > 0 and self.slope > 0 and self.scale > 0
                and self.per_kernel_ms >= 0):
            raise ValueError(f"cache model needs positive midpoint_mib, slope and scale and a "
                             f"non-negative per_kernel_ms, got {self.midpoint_mib}, "
                             f"{self.slope}, {self.scale}, {self.per_kernel_ms}")

    def cold_share(self, weight_mib: float) -> float:
        """Share (0-1) of the cold-cache extra that kernels of a network with ``weight_mib``
        MiB of weights pay."""
        w = max(float(weight_mib), 1e-12)
        z = self.slope * (math.log(self.midpoint_mib) - math.log(w))
        return 0.0 if z > 700 else 1.0 / (1.0 + math.exp(z))

    def mix(self, warm_ms: Any, cold_ms: Any, weight_mib: float) -> np.ndarray:
        """Kernel latencies (ms) inside a network of ``weight_mib`` MiB of weights, from their
        warm and cold predictions (arrays of the same shape)."""
        return self.apply(warm_ms, cold_ms, self.cold_share(weight_mib))

    def apply(self, warm_ms: Any, cold_ms: Any, share: Any) -> np.ndarray:
        """Kernel latencies (ms) from their warm and cold predictions and the cold share of
        the network each belongs to (a scalar, or one per kernel)."""
        warm = np.asarray(warm_ms, dtype=float)
        return (self.scale * (warm + np.asarray(share, dtype=float)
                              * (np.asarray(cold_ms, dtype=float) - warm))
                + self.per_kernel_ms)

    def to_dict(self) -> dict[str, Any]:
        return {"midpoint_mib": float(self.midpoint_mib), "slope": float(self.slope),
                "scale": float(self.scale), "per_kernel_ms": float(self.per_kernel_ms),
                "info": dict(self.info)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CacheModel":
        return cls(midpoint_mib=float(d["midpoint_mib"]), slope=float(d["slope"]),
                   scale=float(d.get("scale", 1.0)),
                   per_kernel_ms=float(d.get("per_kernel_ms", 0.0)),
                   info=dict(d.get("info", {})))


def weight_mib(weight_count: float) -> float:
    """MiB of float32 weights (4 bytes each)."""
    return 4.0 * float(weight_count) / 2 ** 20
