"""nnmeter_nas: kernel-level latency prediction for edge devices and hardware-aware NAS on NNI 3.

Quick start::

    import nnmeter_nas
    predictor = nnmeter_nas.load_predictor("cortexA76cpu_tflite21")
    predictor.predict("model.onnx")          # latency in ms

The top-level import is light: torch, NNI and Ray are imported only by the parts that use them.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "LatencyPredictor",
    "KernelPrediction",
    "load_predictor",
    "list_predictors",
]


def __getattr__(name: str):
    # Lazy exports keep `import nnmeter_nas` fast (no onnx/torch import until needed).
    if name in ("LatencyPredictor", "KernelPrediction"):
        from . import predictor

        return getattr(predictor, name)
    if name in ("load_predictor", "list_predictors"):
        from .packages import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'nnmeter_nas' has no attribute {name!r}")
