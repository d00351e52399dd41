"""ImageNet CNNs measured on nn-Meter's devices and on a Pixel 4.

Data: ``../shared/data/four_devices_imagenet/`` (``$NNMETER_NAS_IMAGENET_DATA`` overrides).

Two whole-network sources (see the data's README for provenance and units):

- ``nnmeter_reference_models.csv``: nn-Meter's reference networks (``resnet18_0``,
  ``vgg16_0``...) measured on the four devices (TFLite 2.1 / OpenVINO 2019R2), ms.
- ``pixel4_e2e.csv``: 72 ``pytorchcv`` CNNs measured on a Pixel 4 with a newer TFLite: one
  Cortex-A76 core (``pixel4_cpu_1large_ms``) and the Adreno 640 GPU (``pixel4_gpu_ms``), ms.

:func:`build_network` builds any of them as a ``torch.nn.Module`` from ``pytorchcv`` (an optional
test/benchmark dependency; its model modules import without torchvision).
Only the csv module is used here; torch and pytorchcv are imported by :func:`build_network`.
"""
from __future__ import annotations

import csv
import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .nb201 import NB201DataError

DATA_ENV_VAR = "NNMETER_NAS_IMAGENET_DATA"

#: nn-Meter reference model -> the nearest pytorchcv network (the data README discusses the
#: ambiguous ones). The fits use nn-Meter's own definitions where
#: :mod:`.nnmeter_reference_nets` rebuilds them (:func:`reference_network_name`).
REFERENCE_TO_PYTORCHCV: dict[str, str] = {
    "alexnet_0": "alexnetb",  # torchvision's AlexNet (no LRN)
    "densenet_0": "densenet121",
    "mnasnet_0": "mnasnet_a1",
    "mobilenetv1_0": "mobilenet_w1",
    "mobilenetv2_0": "mobilenetv2_w1",
    "mobilenetv3large_0": "mobilenetv3_large_w1",
    "mobilenetv3small_0": "mobilenetv3_small_w1",
    "proxylessnas_0": "proxylessnas_mobile",
    "resnet18_0": "resnet18",
    "resnet50_0": "resnet50",
    "shufflenetv2_0": "shufflenetv2_w1",
    "vgg11_0": "vgg11",
    "vgg16_0": "vgg16",
    "vgg19_0": "vgg19",
}

#: Pixel 4 columns -> the nn-Meter device with the same hardware.
PIXEL4_COLUMNS: dict[str, str] = {"cortexA76cpu_tflite21": "pixel4_cpu_1large_ms",
                                  "adreno640gpu_tflite21": "pixel4_gpu_ms"}

# pytorchcv module holding each model-name prefix (longest prefix wins).
_MODULES = ("alexnet", "bninception", "densenet", "dla", "efficientnetedge", "fbnet",
            "fdmobilenet", "ghostnet", "hardnet", "hrnet", "mnasnet", "mobilenet", "mobilenetb",
            "mobilenetv2", "mobilenetv3", "peleenet", "preresnet", "proxylessnas", "regnet",
            "resnet", "resnext", "sepreresnet", "seresnet", "shufflenetv2", "spnasnet", "vgg",
            "vovnet")


def default_data_dir() -> Path:
    """``$NNMETER_NAS_IMAGENET_DATA`` or ``../shared/data/four_devices_imagenet`` (from the
    current directory, then from the repository root)."""
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        return Path(env)
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        p = base.parent / "shared" / "data" / "four_devices_imagenet"
        if p.is_dir():
            return p
    return Path("../shared/data/four_devices_imagenet")


@dataclass(frozen=True)
class NetworkLatency:
    """One measured whole network: ``name`` (pytorchcv name), ``latency_ms``, ``source``
    (``"nnmeter-reference"`` or ``"pixel4"``), ``device`` (nn-Meter device name) and the
    source's own label (``nnmeter_model`` for the reference networks)."""

    name: str
    latency_ms: float
    source: str
    device: str
    label: str = ""


def _read(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise NB201DataError(f"{path} not found; the ImageNet measurements live in "
                             f"../shared/data/four_devices_imagenet (or set ${DATA_ENV_VAR})")
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def reference_latencies(device: str, data_dir: str | Path | None = None) -> list[NetworkLatency]:
    """nn-Meter's reference networks measured on ``device`` (ms), as pytorchcv names."""
    d = Path(data_dir) if data_dir else default_data_dir()
    out = []
    for row in _read(d / "nnmeter_reference_models.csv"):
        if row["device"] == device:
            out.append(NetworkLatency(reference_network_name(row["nnmeter_model"]),
                                      float(row["latency_ms"]), "nnmeter-reference", device,
                                      row["nnmeter_model"]))
    return out


def reference_network_name(nnmeter_model: str) -> str:
    """The network (config-cache name, :func:`build_network` builds it) that stands for nn-Meter
    reference model ``nnmeter_model``: ``"nnmeter:<model>"``, nn-Meter's own definition
    rebuilt in :mod:`.nnmeter_reference_nets`, where there is one; else the pytorchcv
    network of :data:`REFERENCE_TO_PYTORCHCV`."""
    from .nnmeter_reference_nets import NNMETER_DEFINED, PREFIX

    if nnmeter_model in NNMETER_DEFINED:
        return PREFIX + nnmeter_model
    return REFERENCE_TO_PYTORCHCV[nnmeter_model]


def pixel4_latencies(device: str, data_dir: str | Path | None = None) -> list[NetworkLatency]:
    """Pixel 4 whole-network latencies (ms) on the same hardware as ``device`` (empty for the
    Adreno 630 and the VPU)."""
    col = PIXEL4_COLUMNS.get(device)
    if col is None:
        return []
    d = Path(data_dir) if data_dir else default_data_dir()
    return [NetworkLatency(row["model"], float(row[col]), "pixel4", device, row["model"])
            for row in _read(d / "pixel4_e2e.csv") if row.get(col)]


def pytorchcv_module(name: str) -> str:
    """The ``pytorchcv.models`` module defining network ``name``."""
    key = name.replace("_", "")
    best = max((m for m in _MODULES if key.startswith(m)), key=len, default=None)
    if best is None:
        raise KeyError(f"no pytorchcv module known for network {name!r}")
    return best


def build_network(name: str) -> Any:
    """``pytorchcv`` network ``name`` (random weights, eval mode), for 1x3x224x224 input;
    ``"nnmeter:<model>"`` builds nn-Meter's definition of a reference model
    (:func:`.nnmeter_reference_nets.build_reference_network`).

    Imports ``pytorchcv.models.<module>`` directly (``pytorchcv.model_provider`` imports
    torchvision, which does not import beside this torch)."""
    from .nnmeter_reference_nets import PREFIX, build_reference_network

    if name.startswith(PREFIX):
        return build_reference_network(name)
    try:
        mod = importlib.import_module(f"pytorchcv.models.{pytorchcv_module(name)}")
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(f"building {name!r} needs pytorchcv (pip install pytorchcv "
                                  "--no-deps; it is in the 'test' extra)") from exc
    return getattr(mod, name)().eval()
