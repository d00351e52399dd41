"""Former home of the toy space; it lives in :mod:`nnmeter_nas.search_spaces.toy`."""
from __future__ import annotations

from typing import Any

from ..search_spaces import toy as _toy

__all__ = ["ToySpace", "TOY_INPUT_SHAPE"]

TOY_INPUT_SHAPE = _toy.TOY_INPUT_SHAPE


def __getattr__(name: str) -> Any:
    if name == "ToySpace":
        return _toy.ToySpace
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
