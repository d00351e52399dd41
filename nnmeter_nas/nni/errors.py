"""Errors of the NNI layer. Each names the space/label/device at fault and what to do."""
from __future__ import annotations

from ..errors import NnMeterNasError


class UnsupportedSpaceError(NnMeterNasError, ValueError):
    """The model space holds a mutable the latency table cannot enumerate, or the space does not
    run on the given input shape."""


class SampleError(NnMeterNasError, ValueError):
    """A sample misses a label of the space, has an unknown label, or an unknown value."""


class TableMismatchError(NnMeterNasError, ValueError):
    """A latency table was built for another space, input shape or device."""
