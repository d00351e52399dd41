"""Label values of NNI samples as dictionary keys and as JSON (no torch, no NNI import).

NNI samples hold a ``CategoricalMultiple`` or ``InputChoice`` value as a list; lookup tables key
on tuples and JSON files hold lists. These two functions are the one conversion each way,
shared by the latency table (:mod:`.table`), the choice points (:mod:`.choice_points`), the
profiler and the integer codes of :mod:`nnmeter_nas.parallel.codes`.
"""
from __future__ import annotations

from typing import Any, Hashable

__all__ = ["hashable_value", "jsonable_value"]


def hashable_value(value: Any) -> Hashable:
    """``value`` usable as a dictionary key: lists become tuples (recursively).

    Examples
    --------
    >>> hashable_value([1, [2, 3]])
    (1, (2, 3))
    >>> hashable_value("k3")
    'k3'
    """
    if isinstance(value, list):
        return tuple(hashable_value(v) for v in value)
    return value


def jsonable_value(value: Any) -> Any:
    """The inverse for JSON: tuples become lists (recursively).

    Examples
    --------
    >>> jsonable_value((1, (2, 3)))
    [1, [2, 3]]
    """
    if isinstance(value, tuple):
        return [jsonable_value(v) for v in value]
    return value
