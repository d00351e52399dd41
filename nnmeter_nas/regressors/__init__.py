"""Kernel regressors stored as flat numpy arrays (no pickle).

- :class:`~.forest.TreeEnsemble`: tree ensembles (nn-Meter's random forests, the builder's fits).
- :class:`~.cost_model.KernelCostModel`: non-negative cost-term sums that extrapolate by
  construction (the four nn-Meter device packages).

:func:`load_regressor` reads either from its ``.npz`` bytes by the format its header names;
:func:`register_regressor_format` adds a kind.
"""
from __future__ import annotations

import io
import json
from typing import Any, Callable

import numpy as np

from .cost_model import KernelCostModel
from .forest import TreeEnsemble

__all__ = ["TreeEnsemble", "KernelCostModel", "load_regressor", "register_regressor_format",
           "REGRESSOR_FORMATS"]

#: header ``format`` -> (kind name used in manifests, loader from bytes).
REGRESSOR_FORMATS: dict[str, tuple[str, Callable[[bytes], Any]]] = {}


def register_regressor_format(fmt: str, kind: str, loader: Callable[[bytes], Any]) -> None:
    """Make :func:`load_regressor` read files whose header says ``format == fmt``."""
    REGRESSOR_FORMATS[fmt] = (kind, loader)


register_regressor_format("nnmeter-nas-tree-ensemble", "tree-ensemble", TreeEnsemble.load)
register_regressor_format("nnmeter-nas-kernel-cost-model", "cost-model", KernelCostModel.load)


def regressor_kind(regressor: Any) -> str:
    """Manifest ``kind`` of a regressor object."""
    if isinstance(regressor, KernelCostModel):
        return "cost-model"
    if isinstance(regressor, TreeEnsemble):
        return "tree-ensemble"
    return type(regressor).__name__


def load_regressor(data: bytes) -> Any:
    """A regressor from its ``.npz`` bytes, of the kind its header names. Never unpickles;
    raises :class:`~nnmeter_nas.errors.RegressorFileError` (a ``ValueError``) for an unknown or
    unreadable file."""
    from ..errors import RegressorFileError

    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            header = json.loads(bytes(z["header"]).decode())
    except (OSError, KeyError, ValueError) as exc:
        raise RegressorFileError(f"not a regressor file ({exc}); rebuild the package or "
                                 "reinstall it") from exc
    fmt = header.get("format") if isinstance(header, dict) else None
    if fmt not in REGRESSOR_FORMATS:
        raise RegressorFileError(f"unknown regressor format {fmt!r}; this nnmeter_nas reads "
                                 f"{sorted(REGRESSOR_FORMATS)} (upgrade nnmeter-nas?)")
    return REGRESSOR_FORMATS[fmt][1](data)
