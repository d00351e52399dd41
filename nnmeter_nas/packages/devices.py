"""Device lists -> predictors: the one reading of the ``devices`` / ``predictor`` arguments.

``score(devices=...)``, ``LatencyProfiler(space, predictor)``, ``build_latency_table``,
``LatencyFilter`` and the CLI all accept the same forms, resolved here.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import DeviceListError, UnknownPredictorError

if TYPE_CHECKING:
    from ..predictor import LatencyPredictor

__all__ = ["resolve_predictors"]


def _is_all(devices: Any) -> bool:
    return devices is None or (isinstance(devices, str) and devices.strip() == "all") or \
        (isinstance(devices, (list, tuple)) and list(devices) == ["all"])


def resolve_predictors(devices: Any, *, download: bool = True) -> "list[LatencyPredictor]":
    """Predictors for ``devices``, one per device.

    Parameters
    ----------
    devices : str, LatencyPredictor, list of those, or None
        ``"all"`` or None (every installed or built-in predictor), a predictor name, a
        comma-separated string of names, a package path, a
        :class:`~nnmeter_nas.LatencyPredictor`, or a list of those. A name or path may end in
        ``@CALIBRATION`` for one of the package's per-space calibrations
        (``x86avx512cpu_onnxruntime@spos``).
    download : bool, default=True
        Download a named predictor that is neither built in nor installed.

    Returns
    -------
    list of LatencyPredictor
        In the order given (``"all"``: by name).

    Raises
    ------
    DeviceListError
        No device, or a device named twice.
    TypeError
        An entry is neither a name, a path nor a predictor.

    Examples
    --------
    >>> [p.device for p in resolve_predictors("x86avx512cpu_onnxruntime")]  # doctest: +SKIP
    ['x86avx512cpu_onnxruntime']
    """
    from .registry import list_predictors, load_predictor, load_predictor_spec

    if _is_all(devices):
        names = sorted({r.name for r in list_predictors() if r.status == "in use"})
        if not names:
            raise UnknownPredictorError(
                "devices='all' found no installed or built-in predictor; install one with "
                "`nnmeter-nas predictors install NAME_OR_FILE` or name the devices")
        return [load_predictor(n, download=False) for n in names]
    if isinstance(devices, str) or not isinstance(devices, (list, tuple)):
        devices = [devices]
    out = []
    for d in devices:
        if isinstance(d, str):
            for part in [p.strip() for p in d.split(",") if p.strip()]:
                out.append(load_predictor_spec(part, download=download))
        elif hasattr(d, "predict_kernels") and hasattr(d, "device"):
            out.append(d)
        else:
            raise TypeError(f"a device is a predictor name, a package path or a "
                            f"LatencyPredictor, not {type(d).__name__}")
    names = [p.device for p in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DeviceListError(f"devices {dup} are given twice; each device is predicted once")
    if not out:
        raise DeviceListError("no device given: pass devices='all' or device names")
    return out
