"""Benchmark data sets shipped beside the repository (read-only, not part of the wheel).

- :mod:`nnmeter_nas.datasets.nb201`: NAS-Bench-201 cells with their CIFAR-10 accuracy and whole-model
  latency measured on nn-Meter's four devices (``../shared/data/nb201_four_devices/``), plus the
  ``arch_str`` helpers (:func:`parse_arch_str`, :func:`format_arch_str`).

Only the csv module and numpy are used: pandas is not needed.
"""
from __future__ import annotations

from .nb201 import (
    ArchStrError,
    NB201_DEVICES,
    NB201_EDGES,
    NB201_OPS,
    DATA_ENV_VAR,
    MeasuredRows,
    NB201Arch,
    NB201DataError,
    NB201Table,
    default_data_dir,
    format_arch_str,
    normalize_arch_str,
    parse_arch_str,
)

__all__ = [
    "ArchStrError",
    "NB201_DEVICES",
    "NB201_EDGES",
    "NB201_OPS",
    "DATA_ENV_VAR",
    "MeasuredRows",
    "NB201Arch",
    "NB201DataError",
    "NB201Table",
    "default_data_dir",
    "format_arch_str",
    "normalize_arch_str",
    "parse_arch_str",
]
