"""Measurement backends: time an ONNX model on a device (median of repeats and spread)."""
from .base import (Backend, Measurement, NodeTime, Runnable, TimingPlan, get_backend, list_backends,
                   register_backend, summarise)
from .onnxruntime_cpu import OnnxRuntimeCPUBackend

__all__ = ["Backend", "Measurement", "NodeTime", "Runnable", "TimingPlan", "get_backend", "list_backends",
           "register_backend", "summarise", "OnnxRuntimeCPUBackend"]
