"""Measured networks of each source as :class:`~.device_fit.NetworkSample` lists.

- :func:`nb201_samples`: NAS-Bench-201 cells measured on nn-Meter's four devices, with the
  fixed held-out split the built-in packages use (:func:`.nb201_package.nb201_split`).
- :func:`imagenet_samples`: nn-Meter's reference networks on the device (native) and, for the
  Cortex-A76 and the Adreno 640, the Pixel 4 measurements (source ``"pixel4"``: same hardware,
  newer TFLite, fitted factors). Their kernel configurations come from a cache
  (:mod:`.network_configs`) built once from pytorchcv.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from collections import Counter

import numpy as np

from .device_fit import NetworkSample
from .nb201_devices import DEVICES
from .nb201_package import FEATURE_SET, nb201_split, network_counters

#: The cache of the ImageNet networks' kernel configurations shipped with the benchmarks.
DEFAULT_CONFIG_CACHE = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / \
    "four_devices_kernel_configs.json"


def nb201_samples(device: str, data_dir: str | Path | None = None, *, seed: int = 0,
                  test_fraction: float = 0.2) -> tuple[list[NetworkSample], np.ndarray]:
    """Every NAS-Bench-201 network measured on all four devices, as samples of ``device``,
    and the held-out mask (True: held out; the packages never see those)."""
    from ..datasets.nb201 import NB201Table
    from .nb201_graphs import nb201_graph_direct

    table = NB201Table.load(data_dir)
    cells = table.measured_on_all()
    indices = np.array([c.index for c in cells])
    test = nb201_split(indices, test_fraction, seed)
    counters = network_counters([nb201_graph_direct(c.arch_str) for c in cells],
                                DEVICES[device])
    samples = [NetworkSample(f"nb201:{c.index}", "nb201", cnt, float(table.latency(c.index,
                                                                                   device)))
               for c, cnt in zip(cells, counters)]
    return samples, test


def imagenet_samples(device: str, configs: Mapping[str, Counter], *,
                     data_dir: str | Path | None = None) -> list[NetworkSample]:
    """nn-Meter's reference networks measured on ``device`` (source ``"nnmeter-reference"``)
    and the Pixel 4 networks on the same hardware (source ``"pixel4"``), for those networks
    ``configs`` holds (``{pytorchcv name: kernel configurations}``)."""
    from ..datasets.imagenet_devices import pixel4_latencies, reference_latencies

    out = []
    for m in reference_latencies(device, data_dir) + pixel4_latencies(device, data_dir):
        if m.name in configs:
            out.append(NetworkSample(m.label if m.source == "nnmeter-reference" else m.name,
                                     m.source, configs[m.name], m.latency_ms))
    return out


def load_imagenet_configs(cache: str | Path | None = None) -> dict[str, Counter]:
    """Kernel configurations of the ImageNet networks from the cache (no building)."""
    from .network_configs import load_network_configs

    return dict(load_network_configs(cache or DEFAULT_CONFIG_CACHE))


__all__ = ["nb201_samples", "imagenet_samples", "load_imagenet_configs", "FEATURE_SET",
           "DEFAULT_CONFIG_CACHE"]
