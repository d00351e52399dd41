"""Shared helpers of the examples: predictors, the digits dataset, a short training loop, plots.

Not part of the library API; the examples import it as a sibling module.
"""
from __future__ import annotations

import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

BANNER = "!" * 78


def setup_runtime(threads: int | None = None) -> None:
    """Quiet NNI's torch-version notice, use Matplotlib's Agg backend, set torch threads.

    One thread by default: on a small shared CPU, torch's OpenMP threads spin against other
    processes and a training step measured here ran 10-100x slower with 2 threads than with 1.
    """
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="nni")
    warnings.filterwarnings("ignore", message=".*torch.*version.*")
    import matplotlib

    matplotlib.use("Agg")
    import torch

    torch.set_num_threads(threads or 1)


def installed_predictors(names: Sequence[str] | None, out: Path) -> tuple[list[Any], bool]:
    """The predictors to use and whether they are the synthetic fallback.

    ``names``: predictor names or package paths; None = every predictor whose status is "in use"
    (installed or built-in). When none is installed, a synthetic predictor from
    :func:`nnmeter_nas.testing.make_dummy_predictor` is written under ``out`` and a loud warning
    is printed: its milliseconds are not a real device's.
    """
    import nnmeter_nas
    from nnmeter_nas.testing import make_dummy_predictor

    if names:
        preds = []
        for name in names:
            if name == "dummy":
                preds.append(make_dummy_predictor(directory=out / "dummy_predictor"))
            else:  # a name or a package path, optionally NAME@CALIBRATION
                from nnmeter_nas.packages.registry import load_predictor_spec

                preds.append(load_predictor_spec(name))
        return preds, any(p.device == "dummy" for p in preds)
    rows = [r for r in nnmeter_nas.list_predictors() if r.status == "in use"]
    if rows:
        return [nnmeter_nas.load_predictor(r.name, download=False) for r in rows], False
    print(BANNER, file=sys.stderr)
    print("!! No latency predictor is installed: falling back to the SYNTHETIC 'dummy' predictor\n"
          "!! (nnmeter_nas.testing.make_dummy_predictor). Its latencies are NOT a real device's;\n"
          "!! install one with `nnmeter-nas predictors install NAME` for real numbers.",
          file=sys.stderr)
    print(BANNER, file=sys.stderr)
    return [make_dummy_predictor(directory=out / "dummy_predictor")], True


def default_device(devices: Sequence[str]) -> str:
    """The device to budget when none is named: the built-in predictor measured on this host's
    kind of CPU (``x86<isa>cpu_onnxruntime``, whose kernels cover the SPOS space) when it is
    among ``devices``, else the first."""
    from nnmeter_nas.builder.backends.onnxruntime_cpu import cpu_isa

    here = f"x86{cpu_isa()}cpu_onnxruntime"
    return here if here in devices else devices[0]


SPOS_DEPLOY_DEVICE = "cortexA76cpu_tflite21"


def spos_deploy_device(predictors: Sequence[Any], requested: str | None, out: Path
                       ) -> tuple[str, str]:
    """The device whose latency a SPOS search budgets, and why, as ``(device, reason)``.

    ``requested`` wins when given. Otherwise ``cortexA76cpu_tflite21`` when its predictor
    covers every SPOS kernel at 1x3x224x224 within its calibrated range (checked on the four
    uniform architectures, which hold every candidate of every layer; the answer is cached in
    ``out/deploy_device.json`` per predictor version), else this host's x86 predictor.
    """
    import json

    devices = [p.device for p in predictors]
    if requested:
        if requested not in devices:
            from nnmeter_nas.packages.registry import did_you_mean

            sys.exit(f"--device {requested!r} is not among the predictors {devices};"
                     f"{did_you_mean(requested, devices)} --predictors chooses them")
        return requested, "named with --device"
    fallback = default_device(devices)
    arm = next((p for p in predictors if p.device == SPOS_DEPLOY_DEVICE), None)
    if arm is None:
        return fallback, f"{SPOS_DEPLOY_DEVICE} is not among the predictors"
    key = f"{arm.name}:{getattr(arm, 'version', '?')}:{getattr(arm.package, 'path', '')}"
    cache = out / "deploy_device.json"
    outside = None
    if cache.exists():
        try:
            data = json.loads(cache.read_text())
            if data.get("key") == key:
                outside = data["outside"]
        except (ValueError, KeyError):
            outside = None
    if outside is None:
        import warnings as _w

        from nnmeter_nas.graph.torch_export import export_onnx
        from nnmeter_nas.search_spaces.spos import SPOS_LABELS, SPOS_VALUES, SPOSSpace

        outside = set()
        with _w.catch_warnings():
            _w.simplefilter("ignore")
            for v in SPOS_VALUES:
                net = SPOSSpace.frozen_factory({l: v for l in SPOS_LABELS})()
                bd = arm.predict_kernels(export_onnx(net, (1, 3, 224, 224)))
                outside |= {k.kernel_type for k in bd
                            if k.status == "missing" or k.in_domain is not True}
        outside = sorted(outside)
        cache.write_text(json.dumps({"key": key, "outside": outside}))
    if not outside:
        return SPOS_DEPLOY_DEVICE, "its predictor covers every SPOS kernel at 224x224"
    return fallback, (f"{SPOS_DEPLOY_DEVICE}'s predictor is not calibrated for the SPOS kernels "
                      f"{', '.join(outside)} at 224x224, so this host's own predictor is used; "
                      "--device picks another")


def fastest_ms(profiler: Any, device: str) -> float:
    """The latency (ms) of the fastest architecture of the profiler's space on ``device``
    (the table's lower bound: exact for spaces whose labels each belong to one choice)."""
    return float(profiler.table.bounds(device)[0])


def channels_last(x: Any) -> Any:
    """``x`` (N, C, H, W) in channels-last memory order (faster depthwise convs on CPU)."""
    import torch

    return x.contiguous(memory_format=torch.channels_last)


def lightning_classification(x_train: Any, y_train: Any, x_val: Any, y_val: Any, epochs: int,
                             batch_size: int, lr: float, seed: int = 0) -> Any:
    """NNI's Lightning ``Classification`` evaluator on in-memory tensors: SGD (momentum 0.9,
    weight decay 4e-5) at ``lr``, no validation loop, checkpoints or logger."""
    import functools

    import torch
    from nni.nas.evaluator.pytorch import Classification, DataLoader
    from torch.utils.data import TensorDataset

    torch.manual_seed(seed)
    return Classification(
        train_dataloaders=DataLoader(TensorDataset(x_train, y_train), batch_size=batch_size,
                                     shuffle=True),
        val_dataloaders=DataLoader(TensorDataset(x_val, y_val), batch_size=256),
        max_epochs=epochs, num_classes=10, learning_rate=lr, weight_decay=4e-5,
        optimizer=functools.partial(torch.optim.SGD, momentum=0.9),
        accelerator="cpu", enable_progress_bar=False, logger=False, enable_checkpointing=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)


def latency_profiler(space: Any, predictors: list[Any], input_shape: Sequence[int], out: Path,
                     reuse: bool = True) -> Any:
    """A :class:`~nnmeter_nas.nni.LatencyProfiler` over ``predictors``, saved as
    ``out/latency_table.json`` and reused by a rerun with the same devices and space."""
    from nnmeter_nas.nni import LatencyProfiler

    path = out / "latency_table.json"
    devices = [p.device for p in predictors]
    if reuse and path.exists():
        try:
            prof = LatencyProfiler.load(path, space, input_shape)
            if prof.devices == devices:
                print(f"latency table: reusing {path}")
                return prof
        except Exception as exc:  # a stale table: rebuild it
            print(f"latency table: not reusing {path} ({exc})")
    t0 = time.perf_counter()
    prof = LatencyProfiler(space, predictors, input_shape, progress=True)
    prof.save(path)
    print(f"latency table: built for {devices} in {time.perf_counter() - t0:.1f} s -> {path}")
    return prof


def digits_tensors(size: int = 32, seed: int = 0, test_fraction: float = 0.2):
    """scikit-learn's digits (1797 8x8 grey images, 10 classes) as ``(N, 3, size, size)`` float
    tensors in [0, 1] (bilinear upsampling, grey copied to 3 channels), split train/test."""
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x.repeat(1, 3, 1, 1)
    y = torch.tensor(d.target, dtype=torch.long)
    idx_tr, idx_te = train_test_split(range(len(y)), test_size=test_fraction, random_state=seed,
                                      stratify=d.target)
    return x[idx_tr], y[idx_tr], x[idx_te], y[idx_te]


def train_steps(net: Any, x: Any, y: Any, steps: int, batch_size: int, lr: float = 0.05,
                seed: int = 0) -> float:
    """Train ``net`` for ``steps`` SGD steps on random batches; returns the last loss."""
    import torch

    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=4e-5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    net.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        idx = torch.randint(0, len(y), (batch_size,), generator=g)
        loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return float(loss.detach())


def accuracy(net: Any, x: Any, y: Any, batch_size: int = 128) -> float:
    """Top-1 accuracy (0..1) of ``net`` on ``(x, y)``."""
    import torch

    net.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch_size):
            correct += int((net(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
    return correct / max(1, len(y))


def fmt_arch(sample: dict, labels: Sequence[str]) -> str:
    """Compact architecture string: one letter per layer (3/5/7 kernel, x = xception)."""
    code = {"k3": "3", "k5": "5", "k7": "7", "xcep": "x"}
    return "".join(code.get(str(sample.get(l)), "?") for l in labels)


def finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False
