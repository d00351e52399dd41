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
                                     m.source, full_map_pools_as_global(configs[m.name]),
                                     m.latency_ms))
    return out


def full_map_pools_as_global(configs: Counter) -> Counter:
    """The configurations with every average pooling that covers its whole input map (window
    ``k >= hw``, one output pixel) written as the global average pooling the devices ran.

    pytorchcv ends most networks with ``AvgPool2d(7)`` on a 7x7 map, nn-Meter's Keras networks
    with ``GlobalAveragePooling2D``; in the measured TFLite graphs it is a ``MEAN`` operator
    either way (``pixel4_ops_gpu.csv``: resnet18, mobilenet_w1...), which is what the
    ``global-avgpool`` cost model and its feature range ``[hw, c]`` stand for."""
    out: Counter = Counter()
    for (reg, x), n in configs.items():
        if reg == "avgpool" and len(x) >= 5:
            hw, cin, _, k, s = x[:5]
            if k >= hw and (hw - k) // max(s, 1.0) + 1 <= 1:
                out[("global-avgpool", (float(hw), float(cin)))] += n
                continue
        out[(reg, x)] += n
    return out


def load_imagenet_configs(cache: str | Path | None = None) -> dict[str, Counter]:
    """Kernel configurations of the ImageNet networks from the cache (no building)."""
    from .network_configs import load_network_configs

    return dict(load_network_configs(cache or DEFAULT_CONFIG_CACHE))


__all__ = ["nb201_samples", "imagenet_samples", "load_imagenet_configs", "FEATURE_SET",
           "pixel4_gpu_op_samples", "pixel4_gpu_fc_samples", "full_map_pools_as_global",
           "DEFAULT_CONFIG_CACHE", "borrowed_fc_samples"]


def _op_config(op: str, f: dict) -> tuple[str, tuple[float, ...]] | None:
    """An operator row of ``pixel4_ops_gpu.csv`` as an ``nnmeter-nas-1`` configuration (None
    for operators without one: concatenation, whose inputs the file does not list)."""
    def num(key: str) -> float | None:
        v = f.get(key)
        try:
            return float(v)
        except (TypeError, ValueError):
            return None

    hw, cin = num("Input_shape"), num("Input_channel")
    if cin is None or (hw is None and op != "FULLY_CONNECTED"):
        return None
    if op in ("CONV_2D", "CONV_2D_GROUP", "DEPTHWISE_CONV_2D"):
        k, s, cout = float(f["Kernel"]), float(f["Stride"]), float(f["Filter"])
        if op == "DEPTHWISE_CONV_2D":
            params = cout * (k * k + 1)
        else:
            groups = float(f["Group"]) if f.get("Group") not in (None, "-") else 1.0
            params = cout * (k * k * cin / groups + 1)
        flops = 2 * (hw / s) ** 2 * params
        reg = "dwconv-bn-relu" if op == "DEPTHWISE_CONV_2D" else "conv-bn-relu"
        return reg, (hw, cin, cout, k, s, flops / 2e6, params / 1e6)
    if op == "FULLY_CONNECTED":
        cout = float(f["Filter"])
        flop = (2 * cin + 1) * cout
        return "fc", (cin, cout, flop / 2e6, flop / 1e6)
    if op in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        reg = "avgpool" if op == "AVERAGE_POOL_2D" else "maxpool"
        s, out = num("Stride") or 1.0, num("Output_shape")
        # the file gives the padded input size (114 for a 112 map): use output x stride
        return reg, (out * s if out else hw, cin, cin, float(f["Kernel"]), s)
    if op == "MEAN":
        return "global-avgpool", (hw, cin)
    return None


def pixel4_gpu_op_samples(device: str, data_dir: str | Path | None = None
                          ) -> list[NetworkSample]:
    """Per-operator latencies of the Pixel 4 GPU (Adreno 640, newer TFLite) as one-kernel
    samples of source ``"pixel4-ops"`` (its own factor and per-operator overhead), for the
    ``adreno640gpu_tflite21`` only. Convolutions include what the GPU delegate fused into
    them (ReLU, additions)."""
    import csv
    import json

    from ..datasets.imagenet_devices import default_data_dir

    if device != "adreno640gpu_tflite21":
        return []
    path = Path(data_dir or default_data_dir()) / "pixel4_ops_gpu.csv"
    out = []
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            cfg = _op_config(row["operation"], json.loads(row["features_json"]))
            if cfg is None:
                continue
            out.append(NetworkSample(f"{row['model']}#{row['index']}", "pixel4-ops",
                                     Counter({cfg: 1}), float(row["pixel4_gpu_us"]) / 1000))
    return out


def pixel4_gpu_fc_samples(device: str, data_dir: str | Path | None = None
                          ) -> list[NetworkSample]:
    """The fully connected layers of ``pixel4_ops_gpu.csv`` as one-operator samples of source
    ``"pixel4"`` (``whole_network=False``: the Pixel 4's factor, no per-network overhead), for
    the ``adreno640gpu_tflite21`` only.

    They are the same runs as ``pixel4_e2e.csv`` (same GPU, same newer TFLite), timed per
    operator. Of the per-operator rows only these are fitted on: a fully connected layer at
    batch 1 streams its weights once with one GPU kernel, so its time follows its weight count
    whatever its shape, whereas a convolution's time there depends on the GPU kernel the
    delegate chose (Winograd, fused additions), which the cost terms cannot follow. Whole
    networks alone cannot separate a classifier's cost from the convolutions' (VGG's classifier
    is the same in all three VGGs). Figures: docs/four_devices.md."""
    return [NetworkSample(s.name, "pixel4", s.configs, s.latency_ms, whole_network=False)
            for s in pixel4_gpu_op_samples(device, data_dir)
            if next(iter(s.configs))[0] == "fc"]


def borrowed_fc_samples(target_refs: list[NetworkSample], donor_refs: list[NetworkSample],
                        donor_ops: list[NetworkSample], donor_factor: float
                        ) -> list[NetworkSample]:
    """Another device's per-operator fully connected timings in the target device's units
    (source ``"borrowed"``, ``whole_network=False``), for a device whose own networks cannot
    separate a classifier's cost from the rest.

    The Adreno 630's only fully connected layers are the classifiers of the three VGGs (one
    shape, shared) and AlexNet's (nearly the same): from whole networks the fit cannot tell
    the classifier's cost from an offset of the convolutions. The Adreno 640's Pixel 4 GPU
    rows (:func:`pixel4_gpu_fc_samples`) give its *structure* (80-91 us per million weights
    whatever the shape). Their latency on the target is ::

        row ms / donor_factor * scale,   scale = geometric mean over the networks both devices
                                                 ran of (target ms / donor ms)

    ``donor_factor`` converts the Pixel 4's runtime to the donor's (its fitted source factor)
    and ``scale`` the donor to the target, fitted on the reference networks in ``target_refs``
    only (leave-one-out passes the training networks, so a left-out network never sets it).
    The fit treats them as native operator rows (:data:`.device_fit.BORROWED_SOURCES`: no
    factor, no correction) and they never count as calibrating a kernel type on the target.

    Parameters
    ----------
    target_refs, donor_refs : list of NetworkSample
        Whole networks measured on the target and on the donor, matched by ``name``, ms.
    donor_ops : list of NetworkSample
        The donor's per-operator rows (source ``"pixel4"``), ms.
    donor_factor : float
        The donor fit's factor of that source (source latency = factor x donor latency).

    Returns
    -------
    list of NetworkSample
        Empty when no network was measured on both devices.
    """
    donor = {s.name: s.latency_ms for s in donor_refs}
    ratios = [s.latency_ms / donor[s.name] for s in target_refs if s.name in donor]
    if not ratios or not donor_factor > 0:
        return []
    scale = float(np.exp(np.mean(np.log(ratios))))
    return [NetworkSample(o.name, "borrowed", o.configs, o.latency_ms / donor_factor * scale,
                          whole_network=False) for o in donor_ops]
