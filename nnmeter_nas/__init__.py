"""nnmeter_nas: kernel-level latency prediction for edge devices and hardware-aware NAS on NNI 3.

Quick start::

    import nnmeter_nas
    predictor = nnmeter_nas.load_predictor("cortexA76cpu_tflite21")
    predictor.predict("model.onnx")          # latency in ms

The top-level import is light: torch, NNI and Ray are imported only by the parts that use them.
"""
from __future__ import annotations

from ._lazy import lazy_exports

__version__ = "0.1.0"

# Lazy exports keep `import nnmeter_nas` fast (no onnx/torch import until needed).
_LAZY = {
    "LatencyPredictor": "predictor",
    "KernelPrediction": "predictor",
    "load_predictor": "packages.registry",
    "list_predictors": "packages.registry",
}

__all__ = ["__version__", *_LAZY]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
