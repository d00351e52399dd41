"""Issue the package's warnings at the user's line of code.

A warning raised deep inside nnmeter_nas (a predictor called by a latency table called by a
profiler) should name the line that the user wrote, not ours: :func:`warn` walks the stack to
the first frame outside this package, however deep the call, so no call site has to count
its own ``stacklevel``.
"""
from __future__ import annotations

import os
import sys
import warnings

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _outside_package_level() -> int:
    """``stacklevel`` (for :func:`warnings.warn` called by this module's :func:`warn`) of the
    first frame whose code lies outside the nnmeter_nas package."""
    frame, level = sys._getframe(2), 2  # 2: the function that called warn()
    while frame is not None:
        if not os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
            return level
        frame, level = frame.f_back, level + 1
    return 2  # every frame is ours (a script inside the package): blame warn()'s caller


def warn(message: str, category: type[Warning]) -> None:
    """:func:`warnings.warn` attributed to the first line of code outside nnmeter_nas.

    Parameters
    ----------
    message : str
        What happened and what to do.
    category : type of Warning
        One of :mod:`nnmeter_nas.errors`' warnings (or a built-in category).
    """
    warnings.warn(message, category, stacklevel=_outside_package_level())
