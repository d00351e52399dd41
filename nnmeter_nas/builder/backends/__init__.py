"""Measurement backends: time an ONNX model on a device (median of repeats and spread)."""
from .base import (HOST_KEYS, Backend, Measurement, NodeTime, Runnable, TimingPlan,
                   backend_from_settings, get_backend, host_mismatch, list_backends,
                   register_backend, summarise)
from .onnxruntime_cpu import OnnxRuntimeCPUBackend

__all__ = ["Backend", "Measurement", "NodeTime", "Runnable", "TimingPlan", "get_backend",
           "list_backends", "register_backend", "summarise", "OnnxRuntimeCPUBackend",
           "HOST_KEYS", "host_mismatch", "backend_from_settings"]
