"""Errors of the NNI layer, re-exported from :mod:`nnmeter_nas.errors` (their one home)."""
from __future__ import annotations

from ..errors import SampleError, TableMismatchError, UnsupportedSpaceError

__all__ = ["UnsupportedSpaceError", "SampleError", "TableMismatchError"]
